"""Every row of the README "Bad input" table: the public entry point rejects the input with the
error (type and message) the table names, and leaves no partial output behind. Pipelines
validate before touching params, so the bundles here carry configs and no weights."""
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from szero_jax import checkpoints, io, pipelines
from szero_jax.models.tokenizer import WordTokenizer
from szero_jax.pipelines.bundles import Net
from szero_jax.pipelines.config import SamplingConfig
from szero_jax.world import VOCABULARY
from tests.helpers import tiny_models as H

ROOT = Path(__file__).resolve().parents[1]
T, S = H.FRAMES, H.SIZE


@pytest.fixture(scope="module")
def video_models():
    """Configs of the pipeline tests' tiny bundle, no params (validation runs first)."""
    return pipelines.VideoModels(
        config=H.VIDEO, unet=Net(H.UNET, None), resampler=Net(H.RESAMPLER, None),
        vae=Net(H.VAE, None), text_encoder=Net(H.TEXT, None), image_encoder=Net(H.VISION, None),
        tokenizer=WordTokenizer(VOCABULARY, H.TEXT.context_length))


@pytest.fixture(scope="module")
def sd_models():
    return pipelines.SDModels(unet=Net(H.SD_UNET, None), vae=Net(H.VAE, None),
                              text_encoder=Net(H.SD_TEXT, None),
                              tokenizer=WordTokenizer(VOCABULARY, H.SD_TEXT.context_length))


def _image():
    return np.full((S, S, 3), 0.5, np.float32)


def _video_call(models, image=None, prompt="a red ball", **kw):
    return pipelines.image_to_stereo_video(models, _image() if image is None else image, prompt,
                                           **kw)


# ----------------------------------------------------------------- pipelines: arrays
@pytest.mark.parametrize("image, match", [
    (np.zeros((S, S), np.float32), r"image: expected \[H, W, 3\] RGB, got shape \(32, 32\)"),
    (np.zeros((S, S, 4), np.float32), r"image: expected \[H, W, 3\] RGB"),
    (np.zeros((S, S, 3), np.uint8), r"image: expected float values in \[0, 1\], got dtype uint8"),
    (np.full((S, S, 3), 255.0, np.float32), r"image: expected values in \[0, 1\], got \[255, 255\]"),
    (np.full((S, S, 3), np.nan, np.float32), r"image: contains NaN/inf"),
    (np.zeros((S + 4, S, 3), np.float32), r"image: height and width must be multiples of 8"),
])
def test_video_pipeline_rejects_bad_image(video_models, image, match):
    # a depth map of the image's size, so that the image is the only bad input (this bundle
    # has no depth network)
    depth_map = np.ones((T,) + image.shape[:2], np.float32) if image.ndim == 3 else None
    with pytest.raises(ValueError, match=match):
        _video_call(video_models, image, depth_map=depth_map)


def test_image_pipeline_rejects_bad_image(sd_models):
    with pytest.raises(ValueError, match=r"image: expected float values in \[0, 1\]"):
        pipelines.image_to_stereo_image(sd_models, np.zeros((S, S, 3), np.uint8),
                                        np.ones((S, S), np.float32))


@pytest.mark.parametrize("prompt, match", [
    ("", "prompt: expected a non-empty text prompt"),
    ("   ", "prompt: expected a non-empty text prompt"),
    (None, "prompt: expected a string, got NoneType"),
])
def test_empty_or_non_string_prompt(video_models, sd_models, prompt, match):
    with pytest.raises(ValueError, match=match):
        _video_call(video_models, prompt=prompt)
    with pytest.raises(ValueError, match=match):
        pipelines.text_to_stereo_image(sd_models, prompt, size=(S, S),
                                       depth_map=np.ones((S, S)))


def test_over_long_prompt_truncated_with_warning(video_models):
    """The pipelines tokenize through the bundle's tokenizer: an over-long prompt is cut to
    the context length (EOT kept last) with a UserWarning naming the prompt."""
    tok = video_models.tokenizer
    long = " ".join(["red disc"] * 200)
    with pytest.warns(UserWarning, match=r"more than the context length 77; truncated"):
        ids = tok([long, ""])
    assert ids.shape == (2, 77)
    assert ids[0, -1] == tok.eot_id and ids[0, 0] == tok.sot_id
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tok(["red disc", ""])                    # a normal prompt does not warn


@pytest.mark.parametrize("depth_map, match", [
    (np.full((T, S, S), np.nan, np.float32), r"depth_map: contains 2048 NaN/inf values"),
    (np.full((T, S, S), np.inf, np.float32), r"depth_map: contains 2048 NaN/inf values"),
    (np.ones((T, S // 2, S // 2), np.float32),
     r"depth_map: expected shape \(2, 32, 32\) \(the output's frames x height x width\), got "
     r"\(2, 16, 16\)"),
    (np.ones((S, S), np.float32), r"depth_map: expected shape \(2, 32, 32\)"),
    (np.full((T, S, S), "x"), r"depth_map: expected real numbers, got dtype <U1"),
])
def test_video_pipeline_rejects_bad_depth(video_models, depth_map, match):
    with pytest.raises(ValueError, match=match):
        _video_call(video_models, depth_map=depth_map)


@pytest.mark.parametrize("depth_map, match", [
    (np.full((S, S), np.nan, np.float32), r"depth_map: contains 1024 NaN/inf values"),
    (np.ones((S, S + 8), np.float32), r"depth_map: expected shape \(32, 32\)"),
])
def test_image_pipelines_reject_bad_depth(sd_models, depth_map, match):
    with pytest.raises(ValueError, match=match):
        pipelines.text_to_stereo_image(sd_models, "a red ball", size=(S, S), depth_map=depth_map)
    with pytest.raises(ValueError, match=match):
        pipelines.image_to_stereo_image(sd_models, _image(), depth_map)


def test_pipeline_rejects_bad_settings(video_models):
    five = np.zeros((5, S, S, 3), np.float32)
    with pytest.raises(ValueError, match=r"video: the model takes clips of 2 frames \(its "
                                         r"Resampler's video_length\), got 5"):
        pipelines.video_to_stereo_video(video_models, five, "a red ball",
                                        depth_map=np.ones((5, S, S), np.float32))
    with pytest.raises(ValueError, match=r"steps: expected an int in \[1, inf\], got 0"):
        _video_call(video_models, sampling=SamplingConfig(steps=0),
                    depth_map=np.ones((T, S, S), np.float32))
    with pytest.raises(ValueError, match=r"depth_map: the models have no depth network"):
        _video_call(video_models)                 # this bundle has no depth model


# ----------------------------------------------------------------------- io: files
def test_read_non_image_and_truncated_files(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match=r"could not decode image .*notes.png.* \(truncated or not "
                                         r"an image\)"):
        io.read_image(tmp_path / "notes.png")
    io.write_image(tmp_path / "ok.png", np.random.default_rng(0).random((32, 32, 3)))
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=r"could not decode image .*cut.png.*truncated"):
        io.read_image(tmp_path / "cut.png")
    with pytest.raises(FileNotFoundError, match=r"image '.*missing.png' not found"):
        io.read_image(tmp_path / "missing.png")


def test_read_non_video_and_truncated_video(tmp_path):
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(ValueError, match=r"could not decode video .*notes.mp4.* \(truncated or "
                                         r"not a video\)"):
        io.read_video(tmp_path / "notes.mp4")
    frames = np.random.default_rng(0).random((4, 32, 32, 3))
    io.write_video(tmp_path / "ok.mp4", frames)
    data = (tmp_path / "ok.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[:len(data) // 3])
    with pytest.raises(ValueError, match=r"video .*cut.mp4"):
        io.read_video(tmp_path / "cut.mp4")


@pytest.mark.parametrize("frames, match", [
    (np.zeros((32, 32, 3), np.float32), r"frames must be \[T, H, W, C\]"),
    (np.zeros((2, 32, 32, 3), np.int32), r"frames must be float in \[0, 1\] or uint8, got dtype int32"),
    (np.full((2, 32, 32, 3), 2.0, np.float32), r"frames must be in \[0, 1\]"),
    (np.full((2, 32, 32, 3), np.inf, np.float32), r"frames contains NaN/inf"),
])
def test_write_video_rejects_bad_frames(tmp_path, frames, match):
    with pytest.raises(ValueError, match=match):
        io.write_video(tmp_path / "v.mp4", frames)
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_unwritable_output_folder_permissions(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="is not writable"):
            io.write_image(folder / "a.png", _image())
    finally:
        folder.chmod(0o700)


def test_unwritable_output_folder(tmp_path, monkeypatch):
    """A folder the process may not write (os.access says no; as root the permission bits
    are ignored, so access is patched), a missing folder, a file where a folder should be."""
    folder = tmp_path / "ro"
    folder.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == folder
                        else real_access(p, mode))
    with pytest.raises(PermissionError, match=r"output folder '.*ro' is not writable"):
        io.write_image(folder / "a.png", _image())
    with pytest.raises(FileNotFoundError, match=r"output folder '.*nowhere' does not exist"):
        io.write_video(tmp_path / "nowhere" / "a.mp4", np.zeros((2, 32, 32, 3), np.float32))
    from experiments import common_flags
    with pytest.raises(PermissionError, match=r"--output_dir: .*ro is not writable"):
        common_flags.check_output_dir(folder)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"--output_dir: .*file exists and is not a folder"):
        common_flags.check_output_dir(tmp_path / "file")


def test_write_failing_midway_leaves_no_partial_file(tmp_path, monkeypatch):
    """The encoder writes half a file and dies (disk full): the error propagates and neither
    the target nor the temporary file remains."""
    from szero_jax.io import encode

    def dying_writer(args, out):        # FFmpeg writing the final file (io.encode.mux)
        Path(out).write_bytes(b"\x00" * 1000)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(encode, "_run", dying_writer)
    with pytest.raises(OSError, match="No space left on device"):
        io.write_video(tmp_path / "v.mp4", np.zeros((2, 32, 32, 3), np.float32))
    assert os.listdir(tmp_path) == []           # nor the encoder's hidden .mkv

    from PIL import Image

    def dying_save(self, fp, *a, **kw):
        Path(fp).write_bytes(b"\x89PNG partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        io.write_image(tmp_path / "a.png", _image())
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------- checkpoints
def _small_checkpoint(path, family="vae"):
    params = {"w": np.arange(4096, dtype=np.float32).reshape(64, 64), "b": np.ones(3, np.float32)}
    return checkpoints.save_params(path, params, {"kind": "test"}, family)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"path: no checkpoint directory at .*nope"):
        checkpoints.load_params(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"checkpoint: no directory at .*nope"):
        pipelines.load_video_models(tmp_path / "nope")
    (tmp_path / "partial").mkdir()
    with pytest.raises(FileNotFoundError, match=r"checkpoint: .*partial lacks \['vae', "
                                                r"'text_encoder', 'image_encoder', 'resampler', "
                                                r"'video_unet'\]"):
        pipelines.load_video_models(tmp_path / "partial")
    with pytest.raises(FileNotFoundError, match=r"checkpoint: .*partial lacks \['unet', 'vae', "
                                                r"'text_encoder'\]"):
        pipelines.load_sd_models(tmp_path / "partial")


def test_truncated_checkpoint(tmp_path):
    ck = _small_checkpoint(tmp_path / "ck")
    data = ck / checkpoints.PARAMS_FILE            # the params file cut in half
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"path: could not read the params in .*\(missing or "
                                         r"truncated files\?\)"):
        checkpoints.load_params(ck)
    ck2 = _small_checkpoint(tmp_path / "ck2")
    text = (ck2 / "config.json").read_text()
    (ck2 / "config.json").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=r"config.json is not valid JSON \(truncated\?\)"):
        checkpoints.load_params(ck2)


def test_wrong_family_checkpoint(tmp_path):
    ck = _small_checkpoint(tmp_path / "ck", family="vae")
    with pytest.raises(ValueError, match=r"holds a 'vae' checkpoint; expected 'clip_text'"):
        checkpoints.load_params(ck, "clip_text")
    # a model folder whose networks are of the wrong families
    root = tmp_path / "models"
    for name in ("vae", "text_encoder", "image_encoder", "resampler", "video_unet"):
        _small_checkpoint(root / name, family="vae")
    with pytest.raises(ValueError, match=r"holds a 'vae' checkpoint; expected 'dynamicrafter_unet'"):
        pipelines.load_video_models(root)


def test_converter_rejects_missing_truncated_and_wrong_family_weights(tmp_path, fixtures_dir):
    from convert import common
    from experiments import convert as launcher
    with pytest.raises(FileNotFoundError, match=r"--checkpoint: no file or folder at .*none.ckpt"):
        launcher.run("dynamicrafter", str(tmp_path / "none.ckpt"), str(tmp_path / "out"))
    d = fixtures_dir / "dynamicrafter"
    data = (d / "openclip_tiny.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut.safetensors"):
        common.load_state_dict(tmp_path / "cut.safetensors")
    # OpenCLIP weights given to the DynamiCrafter converter: every key is listed as unmapped
    from tests.test_convert_dynamicrafter import _tiny_config
    cfg = _tiny_config(d)
    import json
    cfg_json = tmp_path / "cfg.json"
    cfg_json.write_text(json.dumps({"config": checkpoints._encode(cfg)}))  # pylint: disable=protected-access
    with pytest.raises(common.ConversionError, match=r"transformer.resblocks.0"):
        launcher.run("dynamicrafter", str(d / "openclip_tiny.safetensors"), str(tmp_path / "o"),
                     config=str(cfg_json), parts=["unet", "resampler"])
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match=r"--family: expected one of"):
        launcher.run("sd3", str(d / "openclip_tiny.safetensors"), str(tmp_path / "o"))


# ------------------------------------------------------------------------ launchers
def test_interrupted_run_leaves_no_outputs(tmp_path):
    """staged_outputs (what the launchers write through): files appear only when the run
    completes; a KeyboardInterrupt after some files were written leaves none, and a
    previous run's outputs stay untouched."""
    from experiments import common_flags
    out = tmp_path / "out"
    out.mkdir()
    (out / "left.mp4").write_bytes(b"previous run")
    with pytest.raises(KeyboardInterrupt):
        with common_flags.staged_outputs(out) as stage:
            io.write_video(stage / "left.mp4", np.zeros((2, 32, 32, 3), np.float32))
            io.write_image(stage / "sbs.png", _image())
            raise KeyboardInterrupt
    assert sorted(os.listdir(out)) == ["left.mp4"]
    assert (out / "left.mp4").read_bytes() == b"previous run"


def test_evaluate_rejects_bad_folders(tmp_path):
    from experiments import evaluate
    with pytest.raises(FileNotFoundError, match=r"--input_dir: no folder at"):
        evaluate.discover(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"holds no <name>left.<ext> / <name>right.<ext> pairs"):
        evaluate.discover(tmp_path / "empty")
    io.write_image(tmp_path / "a_left.png", _image())
    with pytest.raises(FileNotFoundError, match=r"a_left.png has no matching a_right"):
        evaluate.discover(tmp_path)
    io.write_image(tmp_path / "a_right.png", _image())
    np.save(tmp_path / "a_disparity.npy", np.full((S, S), np.nan, np.float32))
    with pytest.raises(ValueError, match=r"a_disparity.npy: disparity contains NaN/inf"):
        evaluate.evaluate(tmp_path, use_lpips=False)
    np.save(tmp_path / "a_disparity.npy", np.ones((S, S + 2), np.float32))
    with pytest.raises(ValueError, match=r"disparity must have shape \(1, 32, 32\)"):
        evaluate.evaluate(tmp_path, use_lpips=False)
    assert not (tmp_path / "metrics.json").exists()
