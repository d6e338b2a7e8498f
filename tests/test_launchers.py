"""The absl launchers in experiments/: --help lists every flag with its default, --flagfile
works, and each runs end to end at small sizes (convert on the tiny fixtures, evaluate on a
rendered world scene, generate / generate_image on the tiny default)."""
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCHERS = ("convert", "evaluate", "generate", "generate_image")
COMMON = {"generate": ("checkpoint", "output_dir", "seed", "format", "dtype",
                       "compilation_cache_dir"),
          "generate_image": ("checkpoint", "output_dir", "seed", "format", "dtype",
                             "compilation_cache_dir"),
          "convert": ("checkpoint", "output_dir", "dtype"),
          "evaluate": ("output_dir", "compilation_cache_dir")}


def launch(name, *args, timeout=600, check=True):
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", f"experiments.{name}", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def parse_help(text):
    """{flag: help block} of the flags --help lists."""
    blocks, name = {}, None
    for line in text.splitlines():
        m = re.match(r"^  --(?:\[no\])?([A-Za-z0-9_]+):", line)
        if m:
            name = m.group(1)
            blocks[name] = line
        elif name and line.startswith("    "):
            blocks[name] += " " + line.strip()
        else:
            name = None
    return blocks


@pytest.mark.parametrize("name", LAUNCHERS)
def test_help_lists_flags_with_defaults(name):
    if not (ROOT / "experiments" / f"{name}.py").is_file():
        pytest.skip(f"experiments/{name}.py is not in this checkout yet")
    proc = launch(name, "--help", check=False)     # absl exits with 1 after --help
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    blocks = parse_help(proc.stdout + proc.stderr)
    assert set(COMMON[name]) <= set(blocks), sorted(blocks)
    no_default = [f for f, b in blocks.items() if not re.search(r"\bdefault\b", b, re.I)]
    assert not no_default, f"--help of {name} shows no default for {no_default}"
    assert "--flagfile" not in blocks          # absl's own flags stay in --helpfull


def test_common_flags_helpers(tmp_path):
    from experiments import common_flags as cf
    assert cf.formats("all") == ("sbs", "half-sbs", "tb", "half-tb", "anaglyph", "anaglyph-dubois")
    assert cf.formats("tb") == ("tb",)
    with pytest.raises(ValueError, match="--format"):
        cf.formats("side")
    assert cf.checkpoint_path("tiny") is None and cf.checkpoint_path(None) is None
    with pytest.raises(FileNotFoundError, match="--checkpoint"):
        cf.checkpoint_path(str(tmp_path / "nope"))
    out = tmp_path / "out"
    with cf.staged_outputs(out) as stage:
        (stage / "a.txt").write_text("a")
        assert not (out / "a.txt").exists()       # nothing visible before the end
    assert (out / "a.txt").read_text() == "a" and os.listdir(out) == ["a.txt"]


# ------------------------------------------------------------------------------- convert
def _openclip_args(fixtures_dir, tmp_path):
    d = fixtures_dir / "dynamicrafter"
    bpe = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    bpe.write_bytes(b"stand-in")
    return d, ["--family=openclip", f"--checkpoint={d / 'openclip_tiny.safetensors'}",
               f"--model_config={d / 'openclip_tiny_config.json'}", f"--bpe_vocab={bpe}"]


def test_convert_openclip_cli_with_flagfile(fixtures_dir, tmp_path):
    d, args = _openclip_args(fixtures_dir, tmp_path)
    flagfile = tmp_path / "convert.flags"
    flagfile.write_text("\n".join(args + [f"--output_dir={tmp_path / 'clip'}"]) + "\n")
    proc = launch("convert", f"--flagfile={flagfile}")
    assert f"wrote {tmp_path / 'clip'}" in proc.stdout
    from szero_jax import checkpoints
    params, cfg = checkpoints.load_params(tmp_path / "clip" / "vision", "clip_vision")
    ref = json.loads((d / "openclip_tiny_config.json").read_text())
    assert cfg.width == ref["vision_cfg"]["width"]
    assert (tmp_path / "clip" / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz").read_bytes() == b"stand-in"


def test_convert_dynamicrafter_run_tiny(fixtures_dir, tmp_path):
    """convert.run on a tiny DynamiCrafter .ckpt (UNet + Resampler), config from JSON."""
    import torch
    from experiments import convert as launcher
    from szero_jax import checkpoints
    from tests.test_convert_dynamicrafter import _tiny_config, _tiny_state
    d = fixtures_dir / "dynamicrafter"
    cfg = _tiny_config(d)
    state = _tiny_state(d)
    torch.save({"state_dict": state}, tmp_path / "tiny.ckpt")
    cfg_json = tmp_path / "cfg.json"
    cfg_json.write_text(json.dumps({"config": checkpoints._encode(cfg)}))  # pylint: disable=protected-access
    written, summary = launcher.run("dynamicrafter", str(tmp_path / "tiny.ckpt"),
                                    str(tmp_path / "dc"), config=str(cfg_json),
                                    parts=["unet", "resampler"])
    assert written == [tmp_path / "dc"] and "unet, resampler" in summary
    params, loaded = checkpoints.load_params(tmp_path / "dc", "dynamicrafter")
    assert loaded == cfg
    w = state["image_proj_model.layers.0.0.to_kv.weight"].numpy()
    np.testing.assert_array_equal(params["resampler"]["layers_0_0"]["to_kv"]["kernel"], w.T)
    with pytest.raises(ValueError, match="--parts"):
        launcher.run("dynamicrafter", str(tmp_path / "tiny.ckpt"), str(tmp_path / "dc2"),
                     config=str(cfg_json), parts=["unet", "wheels"])


# ------------------------------------------------------------------------------ evaluate
def _scene_folder(tmp_path):
    from szero_jax import io
    from szero_jax.world import make_scene
    s = make_scene(3, 64, 64, 4)
    folder = tmp_path / "outputs"
    folder.mkdir()
    io.write_video(folder / "scene_left.mp4", s.left)
    io.write_video(folder / "scene_right.mp4", s.right)
    io.write_video(folder / "scene_right_gt.mp4", s.right)
    np.save(folder / "scene_disparity.npy", s.disparity)
    io.write_image(folder / "flat_left.png", s.left[0])
    io.write_image(folder / "flat_right.png", s.left[0])     # a "stereo" pair with no parallax
    return folder, s


def test_evaluate_cli_table_and_metrics_json(tmp_path):
    folder, _ = _scene_folder(tmp_path)
    flagfile = tmp_path / "eval.flags"
    flagfile.write_text(f"--input_dir={folder}\n--nolpips\n--output_dir={tmp_path / 'm'}\n")
    proc = launch("evaluate", f"--flagfile={flagfile}")
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:4] == ["sample", "vertical_disparity", "lr_consistency",
                                    "temporal_flicker"]
    assert [ln.split()[0] for ln in lines[1:4]] == ["flat", "scene", "mean"]
    assert f"wrote {tmp_path / 'm' / 'metrics.json'}" in proc.stdout
    res = json.loads((tmp_path / "m" / "metrics.json").read_text())
    scene, flat = res["samples"]["scene"], res["samples"]["flat"]
    # the world's right view is the true one: small warp error, no vertical offset, no extra
    # flicker; identical right and ground truth -> PSNR inf, SSIM 1
    assert scene["lr_consistency"] < 0.05
    assert abs(scene["vertical_disparity"]) < 0.25 and abs(flat["vertical_disparity"]) < 0.25
    assert 0.8 < scene["temporal_flicker"] < 1.25
    assert scene["psnr"] == "inf" and scene["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert scene["lpips"] is None                      # --nolpips
    assert flat["lr_consistency"] is None and flat["temporal_flicker"] is None
    assert res["files"]["scene"]["disparity"] == "scene_disparity.npy"


def test_evaluate_detects_wrong_right_view(tmp_path):
    """A right view shifted by 3 rows, or the left view itself, scores worse."""
    from experiments import evaluate as ev
    from szero_jax import io
    folder, s = _scene_folder(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    io.write_video(bad / "left.mp4", s.left)
    io.write_video(bad / "right.mp4", np.roll(s.left, 3, axis=1))     # no parallax, 3 rows down
    np.save(bad / "disparity.npy", s.disparity)
    res, path = ev.evaluate(bad, use_lpips=False)
    row = res["samples"]["bad"]
    assert path == bad / "metrics.json"
    assert row["vertical_disparity"] == pytest.approx(3.0, abs=0.3)
    good, _ = ev.evaluate(folder, use_lpips=False)
    assert row["lr_consistency"] > 2 * good["samples"]["scene"]["lr_consistency"]


# ------------------------------------------------------------------- generate launchers
GENERATE_SMALL = {
    "generate": ["--steps=2", "--depth_steps=1", "--restart_steps=1", "--restart_rounds=1",
                 "--refine_rounds=0"],
    "generate_image": ["--steps=2"],
}


def _have_launcher(name):
    if not (ROOT / "experiments" / f"{name}.py").is_file():
        pytest.skip(f"experiments/{name}.py is not in this checkout yet")


def _weights_flag():
    """The shipped tiny family once every network of it is there, else random tiny weights."""
    from szero_jax import checkpoints, tiny
    complete = all((checkpoints.TINY_DIR / n).is_dir() for n in tiny.FAMILIES)
    return [] if complete else ["--random_weights_for_testing"]


def test_generate_runs_on_tiny_default(tmp_path):
    """python -m experiments.generate on the tiny default (random tiny-family weights until
    the trained ones are shipped), 2 DDIM steps, every format."""
    _have_launcher("generate")
    out = tmp_path / "gen"
    flagfile = tmp_path / "gen.flags"
    flagfile.write_text("\n".join(GENERATE_SMALL["generate"] + _weights_flag() +
                                  [f"--output_dir={out}", "--format=all", "--seed=3"]) + "\n")
    proc = launch("generate", f"--flagfile={flagfile}", timeout=1500)
    files = sorted(os.listdir(out))
    from szero_jax import io
    for name in ["left.mp4", "right.mp4", "summary.json", "report.html"] + [
            io.output_name(layout, ".mp4") for layout in io.LAYOUTS]:      # VR-player names
        assert name in files and f"wrote {out / name}" in proc.stdout
    assert not [f for f in files if f.startswith(".")]          # no staging leftovers
    left, fps = io.read_video(out / "left.mp4")
    sbs, _ = io.read_video(out / io.output_name("sbs", ".mp4"))
    assert fps == 8.0 and sbs.shape[2] == 2 * left.shape[2] and sbs.shape[:2] == left.shape[:2]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["sampling"]["steps"] == 2 and summary["settings"]["sampling"]["seed"] == 3
    from szero_jax import tiny                # the demo's measured stereo settings, K / L / N
    stereo = summary["settings"]["stereo"]     # as the flags gave them
    assert {k: stereo[k] for k in tiny.DEMO_STEREO} == tiny.DEMO_STEREO
    assert (stereo["restart_steps"], stereo["restart_rounds"]) == (1, 1)
    m = summary["metrics"]
    assert np.isfinite(m["left_right_consistency"])
    # the composite's ratio is the same zero-disparity control over its own consistency
    assert np.isfinite(m["composite"]["left_right_consistency"])
    assert m["composite"]["consistency_ratio_control_over_result"] == pytest.approx(
        m["left_right_consistency_zero_disparity_control"] / m["composite"]["left_right_consistency"])
    # evaluate reads generate's folder as it is (left.mp4 / right.mp4)
    from experiments import evaluate
    res, _ = evaluate.evaluate(out, tmp_path / "metrics", use_lpips=False)
    row = res["samples"]["gen"]
    assert np.isfinite(row["vertical_disparity"]) and np.isfinite(row["temporal_flicker"])


def test_generate_interrupted_while_writing_leaves_no_outputs(tmp_path, monkeypatch):
    """generate's main with the pipeline stubbed (instant): a KeyboardInterrupt while the
    second file is being encoded (left.mp4 already written) leaves the output folder empty."""
    _have_launcher("generate")
    from absl import flags
    from experiments import generate
    from szero_jax import io, pipelines
    from szero_jax.pipelines.config import DepthConfig, SamplingConfig
    rng = np.random.default_rng(0)
    t, h, w = 4, 32, 32
    fake = pipelines.StereoVideo(rng.random((t, h, w, 3), np.float32),
                                 rng.random((t, h, w, 3), np.float32),
                                 np.ones((t, h, w), np.float32), np.zeros((t, h, w), bool),
                                 rng.random((t, h, w), np.float32), {},
                                 {"sampling": SamplingConfig(), "depth": DepthConfig()})
    monkeypatch.setattr(pipelines, "image_to_stereo_video", lambda *a, **k: fake)
    # what main reads
    bundle = types.SimpleNamespace(config=types.SimpleNamespace(guidance=7.5, max_disparity=0.08))
    monkeypatch.setattr(generate, "_models", lambda: bundle)
    monkeypatch.setattr(generate, "_input_image", lambda models: fake.left[0])
    calls = []
    real = io.delivery.VideoWriter

    def interrupted(*a, **k):          # the encoder of each file the launcher writes
        calls.append(a[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(io.delivery, "VideoWriter", interrupted)
    out = tmp_path / "gen"
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["generate", f"--output_dir={out}", "--prompt=a red disc", "--format=tb"])
    try:
        with pytest.raises(KeyboardInterrupt):
            generate.main(["generate"])
        assert len(calls) == 2 and os.listdir(out) == []
        monkeypatch.setattr(io.delivery, "VideoWriter", real)
        generate.main(["generate"])                  # the same run, not interrupted
        assert {"left.mp4", "right.mp4", "tb_TBF_fulltb.mp4", "summary.json",
                "report.html"} <= set(os.listdir(out))
    finally:
        flags.FLAGS.unparse_flags()


@pytest.mark.slow
def test_generate_sigint_leaves_no_outputs(tmp_path):
    """A real Ctrl-C (SIGINT) during the stereo stage of the launcher: no files."""
    _have_launcher("generate")
    import signal
    import time
    out = tmp_path / "gen"
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-m", "experiments.generate", *_weights_flag(),
                             *GENERATE_SMALL["generate"], f"--output_dir={out}"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            # a shell's background jobs inherit SIGINT ignored; restore it
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("[stereo]"):
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
            break
    seen += proc.stdout.readlines()
    proc.wait(timeout=600)
    log = "".join(seen)
    assert "[stereo] start" in log and "wrote" not in log, log[-3000:]
    assert proc.returncode != 0 and "KeyboardInterrupt" in log, log[-3000:]
    assert not out.exists() or os.listdir(out) == []


def test_generate_image_runs_text_mode(tmp_path):
    """python -m experiments.generate_image, text mode, on random tiny SD weights, 2 steps,
    a 64x64 depth ramp."""
    _have_launcher("generate_image")
    depth = np.linspace(1.0, 0.0, 64, dtype=np.float32)[:, None].repeat(64, 1)
    np.save(tmp_path / "depth.npy", depth)
    out = tmp_path / "img"
    proc = launch("generate_image", "--random_weights_for_testing", "--mode=text",
                  "--prompt=a red disc in front of a blue background",
                  f"--depth={tmp_path / 'depth.npy'}", f"--output_dir={out}", "--format=tb",
                  *GENERATE_SMALL["generate_image"], timeout=1500)
    for name in ("left.png", "right.png", "sbs_LRF_Full_SBS.png", "anaglyph_redcyan.png",
                 "tb_TBF_fulltb.png", "summary.json", "report.html"):
        assert f"wrote {out / name}" in proc.stdout and (out / name).is_file()
    from szero_jax import io
    left, tb = io.read_image(out / "left.png"), io.read_image(out / "tb_TBF_fulltb.png")
    assert left.shape == (64, 64, 3) and tb.shape == (128, 64, 3)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["sampling"]["steps"] == 2 and 0.0 <= summary["metrics"]["hole_fraction"] < 1.0
