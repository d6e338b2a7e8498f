"""Held-out evaluation of the tiny family (the ``eval`` stage of experiments/train_tiny.py).

On world seeds >= HELDOUT_SEED_START (never used in training) it measures, one function per
network: VAE PSNR on frames and on disparity maps (``eval_vae``); image->caption retrieval
of the CLIP pair (``eval_clip``); the video UNet's v-prediction loss at fixed timesteps,
conditioned, unconditioned and the zero predictor (``eval_video``), and DDIM samples from
the held-out first frame and caption (``sample_grid``: ``<docs_dir>/tiny_samples.png``,
ground truth above each); the depth model's scale/shift-aligned error against ground truth
and a constant-depth baseline, with and without dissolving (``eval_depth``). ``run`` loads
the family as a ``VideoModels`` bundle, calls them and writes ``<tiny_dir>/metrics.json``.
The networks run through the public stages (``szero_jax.pipelines.stages``), as in the
pipelines.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from PIL import Image

from szero_jax import world
from szero_jax.geometry import minmax_signed
from szero_jax.io.atomic import atomic_output
from szero_jax.metrics import lpips
from szero_jax.models.clip import preprocess_image
from szero_jax.pipelines import stages
from szero_jax.pipelines.bundles import VideoModels, load_video_models
from szero_jax.pipelines.conditioning import decode_latents, video_model_fn
from szero_jax.pipelines.config import DepthConfig, SamplingConfig

VIDEO_T_GRID = (100, 300, 500, 700, 900)  # timesteps of the held-out denoising loss
# Sample grid: 25 DDIM steps, eta 0, the checkpoint's CFG, DynamiCrafter 512 run script's
# guidance_rescale 0.7.
GRID_SAMPLING = SamplingConfig(steps=25, eta=0.0, guidance_rescale=0.7)
GRID_CLIPS = 4
DISSOLVE_STEPS = (5, 20, 40)  # released examples 5-30; the paper recommends 40 for hard cases
DEPTH = DepthConfig(dissolve_step=0)  # DepthCrafter's 5 Euler steps at CFG 1.2 (config.py)


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """Held-out world clips: frames [N, T, H, W, 3] in [0, 1], disparity [N, T, H, W]."""
    seeds: tuple
    video01: np.ndarray
    disparity: np.ndarray
    captions: tuple

    @classmethod
    def render(cls, num_eval: int, height: int, width: int, frames: int) -> "HeldOut":
        seeds = tuple(world.HELDOUT_SEED_START + k for k in range(num_eval))
        data = world.batch(list(seeds), height, width, frames)
        return cls(seeds, np.asarray(data.left, np.float32), data.disparity,
                   tuple(data.caption))


def psnr(a, b):
    """PSNR in dB of images in [-1, 1] over the last three axes."""
    mse = np.mean((np.clip(a, -1, 1) - b) ** 2, axis=(-3, -2, -1))
    return 10 * np.log10(4.0 / np.maximum(mse, 1e-12))


def aligned_errors(pred, gt):
    """(AbsRel of depth ~ 1/disparity, delta1, AbsRel of disparity) after a least-squares
    scale/shift fit of the predicted disparity to the ground truth over the whole clip
    (DepthCrafter's protocol fits disparity, then scores depth; far pixels, where the fitted
    disparity nears 0, dominate the depth AbsRel, so the disparity AbsRel is reported too)."""
    a = np.stack([pred.ravel(), np.ones(pred.size)], 1)
    coef, *_ = np.linalg.lstsq(a, gt.ravel(), rcond=None)
    fit = np.maximum(a @ coef, 0.05 * gt.min()).reshape(gt.shape)
    ratio = gt / fit  # = predicted depth / true depth
    return (float(np.mean(np.abs(ratio - 1))), float(np.mean(np.maximum(ratio, 1 / ratio) < 1.25)),
            float(np.mean(np.abs(fit - gt) / gt)))


@functools.partial(jax.jit, static_argnames=("vae_cfg", "dtype", "scale"))
def _decode_signed(params, z, *, vae_cfg, dtype, scale):
    return decode_latents(vae_cfg, dtype, params, z, scale)


def decode_signed(models: VideoModels, z):
    """``stages.decode`` without its clip to the displayed range: [N, T, H, W, 3] in about
    [-1, 1], as ``stages.model_depth`` decodes its depth, so baselines compare like with like."""
    return np.asarray(_decode_signed(models.vae.params, z, vae_cfg=models.vae.config,
                                     dtype=models.dtype, scale=models.config.scale_factor))


def roundtrip(models: VideoModels, video01):
    """VAE encode (``stages.encode``) then ``decode_signed``, clip by clip."""
    return np.concatenate([decode_signed(models, stages.encode(models, v[None])) for v in video01])


# ----------------------------------------------------------------------------- per network
def eval_vae(models: VideoModels, clips: HeldOut):
    """PSNR of the VAE's round trip of frames and of the min-max disparity maps (the depth
    model's input), and LPIPS (AlexNet) of the frames -> (metrics, the round-tripped
    disparity [N, T, H, W] in [-1, 1])."""
    dmap01 = np.repeat((np.asarray(minmax_signed(clips.disparity, axes=(1, 2, 3)))[..., None]
                        + 1.0) / 2.0, 3, -1)
    signed = lambda x: 2.0 * x - 1.0
    rec, drec = roundtrip(models, clips.video01), roundtrip(models, dmap01)
    m = {"vae_psnr_frames_db": float(np.mean(psnr(rec, signed(clips.video01)))),
         "vae_psnr_disparity_db": float(np.mean(psnr(drec, signed(dmap01)))),
         "vae_lpips_frames": float(np.mean(lpips((np.clip(rec, -1, 1) + 1.0) / 2.0,
                                                 clips.video01)))}
    logging.info("VAE PSNR frames %.2f dB, disparity maps %.2f dB, LPIPS frames %.4f",
                 m["vae_psnr_frames_db"], m["vae_psnr_disparity_db"], m["vae_lpips_frames"])
    return m, drec.mean(-1)


def eval_clip(models: VideoModels, clips: HeldOut):
    """Top-1 retrieval of each clip's caption among the held-out captions from its first
    frame, by cosine of the projected CLIP embeddings."""
    te, ie = models.text_encoder, models.image_encoder
    tokens = jnp.asarray(models.tokenizer(list(clips.captions)))
    txt = np.asarray(te.module().apply({"params": te.params}, tokens)[2])
    pixels = preprocess_image(jnp.asarray(clips.video01[:, 0]) * 2.0 - 1.0, ie.config.image_size)
    img = np.asarray(ie.module().apply({"params": ie.params}, pixels)[1])
    txt = txt / np.linalg.norm(txt, axis=-1, keepdims=True)
    img = img / np.linalg.norm(img, axis=-1, keepdims=True)
    n = len(clips.seeds)
    m = {"clip_top1_image_to_text": float(np.mean(np.argmax(img @ txt.T, 1) == np.arange(n))),
         "clip_top1_chance": 1.0 / n}
    logging.info("CLIP top-1 %.3f (chance %.3f)", m["clip_top1_image_to_text"], 1 / n)
    return m


def contexts(models: VideoModels, clips: HeldOut, z0) -> stages.Context:
    """``stages.context`` of every clip (caption, first frame, its latent), stacked on the
    batch axis."""
    sampling = stages.resolve(models, GRID_SAMPLING)
    ctxs = [stages.context(models, cap, clips.video01[k:k + 1, 0], z0[k:k + 1, :1], sampling)
            for k, cap in enumerate(clips.captions)]
    stack = lambda *xs: jnp.concatenate(xs)
    return ctxs[0]._replace(cond=jax.tree.map(stack, *[c.cond for c in ctxs]),
                            uncond=jax.tree.map(stack, *[c.uncond for c in ctxs]))


def eval_video(models: VideoModels, ctx: stages.Context, z0):
    """Mean squared v-prediction error of the video UNet on the held-out latents ``z0``
    [N, T, h, w, c] at VIDEO_T_GRID (fixed noise), with the clips' context, with the
    unconditional one, and of the zero predictor (the loss scale)."""
    ab = np.asarray(stages.schedule(models).alphas_cumprod)
    cfg, dtype = models.unet.config, models.dtype
    unet = jax.jit(lambda p, x, t, c: video_model_fn(cfg, dtype, p, ctx.fs, "eval")(x, t, c))
    apply = lambda x, t, c: unet(models.unet.params, x, t, c)
    losses = {"conditioned": [], "unconditioned": [], "zero_predictor": []}
    rng = np.random.default_rng(0)
    for t in VIDEO_T_GRID:
        eps = rng.standard_normal(z0.shape).astype(np.float32)
        x_t = np.sqrt(ab[t]) * z0 + np.sqrt(1 - ab[t]) * eps
        v = np.sqrt(ab[t]) * eps - np.sqrt(1 - ab[t]) * z0
        tt = jnp.full((len(z0),), t)
        for name, c in (("conditioned", ctx.cond), ("unconditioned", ctx.uncond)):
            losses[name].append(float(np.mean((np.asarray(apply(x_t, tt, c)) - v) ** 2)))
        losses["zero_predictor"].append(float(np.mean(v ** 2)))
    logging.info("video held-out v-loss %s", {k: round(float(np.mean(v)), 4) for k, v in losses.items()})
    return {k: {"per_t": dict(zip(map(str, VIDEO_T_GRID), v)), "mean": float(np.mean(v))}
            for k, v in losses.items()}


def sample_grid(models: VideoModels, ctx: stages.Context, clips: HeldOut, docs_dir):
    """DDIM samples (GRID_SAMPLING) of the first GRID_CLIPS clips from their context; writes
    the grid (ground truth above each sample) to ``docs_dir/tiny_samples.png``."""
    n = min(GRID_CLIPS, len(clips.seeds))
    part = ctx._replace(cond=jax.tree.map(lambda a: a[:n], ctx.cond),
                        uncond=jax.tree.map(lambda a: a[:n], ctx.uncond))
    sampling = stages.resolve(models, GRID_SAMPLING)
    x_T = jax.random.normal(jax.random.PRNGKey(0), ctx.cond["concat"][:n].shape)
    z = stages.left_sample(models, part, x_T, stages.video_plan(models, sampling), None)
    gen, truth = decode_signed(models, z), 2.0 * clips.video01[:n] - 1.0
    rows = [np.concatenate(list(clip), axis=1) for pair in zip(truth, np.clip(gen, -1, 1))
            for clip in pair]
    grid = np.round((np.concatenate(rows, axis=0) + 1) * 127.5).astype(np.uint8)
    docs = Path(docs_dir)
    docs.mkdir(parents=True, exist_ok=True)
    with atomic_output(docs / "tiny_samples.png") as tmp:
        Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(tmp)
    return {"png": str(docs / "tiny_samples.png"), "captions": list(clips.captions[:n]),
            "ddim_steps": sampling.steps, "cfg": sampling.guidance,
            "guidance_rescale": sampling.guidance_rescale,
            "first_frame_l1_to_condition": float(np.mean(np.abs(gen[:, 1:] - truth[:, :1]))),
            "gt_l1_to_first_frame": float(np.mean(np.abs(truth[:, 1:] - truth[:, :1])))}


def eval_depth(models: VideoModels, clips: HeldOut, vae_disparity):
    """Aligned errors of ``stages.model_depth`` (DEPTH, then dissolved at DISSOLVE_STEPS)
    per clip (key = PRNGKey(clip index)), of a constant disparity, and of the VAE round trip
    of the ground-truth map (``vae_disparity``: the best a decoded latent can do)."""
    configs = {"sampled": DEPTH, **{f"dissolved_{d}": dataclasses.replace(DEPTH, dissolve_step=d)
                                    for d in DISSOLVE_STEPS}}
    errs = {n: [] for n in list(configs) + ["constant", "vae_roundtrip_of_gt"]}
    for k, gt in enumerate(clips.disparity):
        for name, cfg in configs.items():
            pred = stages.model_depth(models, clips.video01[k:k + 1], jax.random.PRNGKey(k), cfg)
            errs[name].append(aligned_errors(np.asarray(pred[0]), gt))
        errs["constant"].append(aligned_errors(np.zeros_like(gt), gt))
        errs["vae_roundtrip_of_gt"].append(aligned_errors(vae_disparity[k], gt))
    m = {n: {"abs_rel": float(np.mean([e[0] for e in v])),
             "delta1": float(np.mean([e[1] for e in v])),
             "abs_rel_disparity": float(np.mean([e[2] for e in v]))} for n, v in errs.items()}
    m["protocol"] = (f"{DEPTH.steps}-step Euler (SVD-xt Karras 0.002-700), CFG "
                     f"{DEPTH.guidance}; dissolve: Eq. 5 at index 50 - step of a 50-step plan; "
                     "disparity fit by least squares (scale, shift) per clip; AbsRel/delta1 "
                     "on depth = 1 / disparity, abs_rel_disparity on the fitted disparity")
    logging.info("depth %s", m)
    return m


# ----------------------------------------------------------------------------- run
def run(tiny_dir, num_eval, height, width, frames, docs_dir):
    """Every network of the family in ``tiny_dir`` on ``num_eval`` held-out clips of
    ``frames`` frames at ``height`` x ``width``; writes and returns the metrics."""
    models = load_video_models(tiny_dir)
    if frames != models.num_frames:      # the Resampler's tokens and the UNet's clip length
        raise ValueError(f"frames: expected the family's clip length {models.num_frames}, "
                         f"got {frames}")
    clips = HeldOut.render(num_eval, height, width, frames)
    m = {"heldout_seeds": [clips.seeds[0], clips.seeds[-1]], "size": [height, width, frames]}
    vae_metrics, vae_disparity = eval_vae(models, clips)
    m.update(vae_metrics)
    m.update(eval_clip(models, clips))
    z0 = stages.encode(models, clips.video01)
    ctx = contexts(models, clips, z0)
    m["video_v_loss"] = eval_video(models, ctx, np.asarray(z0))
    m["samples"] = sample_grid(models, ctx, clips, docs_dir)
    m["depth"] = eval_depth(models, clips, vae_disparity)
    out = Path(tiny_dir) / "metrics.json"
    with atomic_output(out) as tmp:
        tmp.write_text(json.dumps(m, indent=1))
    logging.info("wrote %s", out)
    return m
