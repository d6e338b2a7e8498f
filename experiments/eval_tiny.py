"""Held-out evaluation of the tiny family (the ``eval`` stage of experiments/train_tiny.py).

On world seeds >= HELDOUT_SEED_START (never used in training) it measures: VAE PSNR on
frames and on disparity maps; image->caption retrieval of the CLIP pair; the video UNet's
v-prediction loss at fixed timesteps (conditioned, unconditioned, and the zero predictor);
the depth model's scale/shift-aligned error (DepthCrafter-style 5-step Euler sampling, with
and without dissolving, Eq. 5) against ground truth and a constant-depth baseline. Writes
``<tiny_dir>/metrics.json`` and ``<docs_dir>/tiny_samples.png`` (held-out first frame and
caption -> DDIM samples, ground truth above each).
"""
from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from PIL import Image

from szero_jax import tiny, world
from szero_jax.diffusion import (cfg_denoiser, ddim_sample, dynamicrafter_schedule, euler_sample,
                                 make_ddim_plan, make_euler_plan)
from szero_jax.diffusion.guidance import guidance
from szero_jax.models.clip import CLIPTextEncoder, CLIPVisionEncoder, preprocess_image
from szero_jax.models.resampler import Resampler
from szero_jax.models.unet3d import UNet3D
from szero_jax.models.unet_st import UNetSpatioTemporal
from szero_jax.models.vae import AutoencoderKL
from szero_jax.stereo import dissolve_depth

VIDEO_T_GRID = (100, 300, 500, 700, 900)  # timesteps of the held-out denoising loss
DDIM_STEPS = 25  # sampling steps of the sample grid
CFG_RESCALE = 0.7  # DynamiCrafter 512 run script guidance_rescale
DEPTH_STEPS = 5  # DepthCrafter run.py num_inference_steps
DEPTH_GUIDANCE = 1.2  # StereoCrafter-Zero's DepthCrafter guidance (REFERENCES.md)
DISSOLVE_STEPS = (5, 20, 40)  # released examples 5-30; the paper recommends 40 for hard cases


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


def run(tiny_dir, num_eval, height, width, frames, docs_dir):
    fam = tiny.load_tiny_family(root=tiny_dir)
    p = {k: v[0] for k, v in fam.items()}
    vae_cfg, video_cfg = fam["vae"][1], fam["video_unet"][1]
    vae, text_m = AutoencoderKL(vae_cfg), CLIPTextEncoder(fam["text_encoder"][1])
    vis_m, res_m = CLIPVisionEncoder(fam["image_encoder"][1]), Resampler(fam["resampler"][1])
    unet, dunet = UNet3D(video_cfg.unet), UNetSpatioTemporal(fam["depth_unet"][1])
    seeds = [world.HELDOUT_SEED_START + k for k in range(num_eval)]
    data = world.batch(seeds, height, width, frames)
    video = data.left * 2.0 - 1.0  # [N, T, H, W, 3]
    tok = tiny.tokenizer()
    m = {"heldout_seeds": [seeds[0], seeds[-1]], "size": [height, width, frames]}

    # --- VAE
    enc = jax.jit(lambda x: vae.apply(p["vae"], x, method="encode")[0])
    dec = jax.jit(lambda z: vae.apply(p["vae"], z, method="decode"))
    flat = video.reshape(-1, height, width, 3)
    rec = np.concatenate([np.asarray(dec(enc(flat[k:k + 32]))) for k in range(0, len(flat), 32)])
    m["vae_psnr_frames_db"] = float(np.mean(psnr(rec, flat)))
    lo, hi = data.disparity.min((1, 2, 3), keepdims=True), data.disparity.max((1, 2, 3), keepdims=True)
    dmap = np.repeat((2 * (data.disparity - lo) / (hi - lo) - 1)[..., None], 3, -1)
    dflat = dmap.reshape(-1, height, width, 3).astype(np.float32)
    drec = np.concatenate([np.asarray(dec(enc(dflat[k:k + 32]))) for k in range(0, len(dflat), 32)])
    m["vae_psnr_disparity_db"] = float(np.mean(psnr(drec, dflat)))
    logging.info("VAE PSNR frames %.2f dB, disparity maps %.2f dB", m["vae_psnr_frames_db"],
                 m["vae_psnr_disparity_db"])

    # --- CLIP retrieval (first frame -> its caption among the held-out captions)
    tokens = jnp.asarray(tok(list(data.caption)))
    txt = np.asarray(text_m.apply(p["text_encoder"], tokens)[2])
    img = np.asarray(vis_m.apply(p["image_encoder"], preprocess_image(video[:, 0], vis_m.config.image_size))[1])
    txt = txt / np.linalg.norm(txt, axis=-1, keepdims=True)
    img = img / np.linalg.norm(img, axis=-1, keepdims=True)
    sim = img @ txt.T
    m["clip_top1_image_to_text"] = float(np.mean(np.argmax(sim, 1) == np.arange(num_eval)))
    m["clip_top1_chance"] = 1.0 / num_eval
    logging.info("CLIP top-1 %.3f (chance %.3f)", m["clip_top1_image_to_text"], 1 / num_eval)

    # --- video UNet: held-out v-prediction loss
    sf = video_cfg.scale_factor
    z0 = np.stack([np.asarray(enc(v)) for v in video]) * sf  # [N, T, h, w, 4]
    null = text_m.apply(p["text_encoder"], jnp.asarray(tok([""])))[1]

    def context(tokens, images):
        text = text_m.apply(p["text_encoder"], tokens)[1]
        toks = res_m.apply(p["resampler"], vis_m.apply(p["image_encoder"], preprocess_image(
            images, vis_m.config.image_size))[0])
        return jnp.concatenate([text, toks], 1)

    ctx_c = context(tokens, video[:, 0])
    ctx_u = context(jnp.repeat(jnp.asarray(tok([""])), num_eval, 0), np.zeros_like(video[:, 0]))
    assert np.allclose(np.asarray(ctx_u[:, :null.shape[1]]), np.asarray(null[0]), atol=1e-5)
    ab = dynamicrafter_schedule().alphas_cumprod
    concat = np.repeat(z0[:, :1], frames, axis=1)
    fs = jnp.full((num_eval,), video_cfg.unet.default_fs, jnp.float32)
    apply_unet = jax.jit(lambda x, t, c: unet.apply(p["video_unet"], x, t, c, fs))
    losses = {"conditioned": [], "unconditioned": [], "zero_predictor": []}
    rng = np.random.default_rng(0)
    for t in VIDEO_T_GRID:
        eps = rng.standard_normal(z0.shape).astype(np.float32)
        x_t = np.sqrt(ab[t]) * z0 + np.sqrt(1 - ab[t]) * eps
        v = np.sqrt(ab[t]) * eps - np.sqrt(1 - ab[t]) * z0
        inp = jnp.concatenate([x_t, concat], -1)
        tt = jnp.full((num_eval,), t)
        losses["conditioned"].append(float(np.mean((np.asarray(apply_unet(inp, tt, ctx_c)) - v) ** 2)))
        losses["unconditioned"].append(float(np.mean((np.asarray(apply_unet(inp, tt, ctx_u)) - v) ** 2)))
        losses["zero_predictor"].append(float(np.mean(v ** 2)))
    m["video_v_loss"] = {k: {"per_t": dict(zip(map(str, VIDEO_T_GRID), v)), "mean": float(np.mean(v))}
                         for k, v in losses.items()}
    logging.info("video held-out v-loss %s", {k: round(float(np.mean(v)), 4) for k, v in losses.items()})

    # --- video samples (DDIM + CFG) for the grid
    n_show = min(4, num_eval)
    plan = make_ddim_plan(dynamicrafter_schedule(), DDIM_STEPS, "uniform_trailing",
                          guidance_scale=video_cfg.guidance, guidance_rescale=CFG_RESCALE)
    sl = slice(0, n_show)
    model_fn = lambda x, t, c: unet.apply(p["video_unet"], jnp.concatenate([x, c["concat"]], -1), t,
                                          c["text"], c["fs"])
    cond = {"concat": jnp.asarray(concat[sl]), "text": ctx_c[sl], "fs": fs[sl]}
    uncond = {"concat": jnp.asarray(concat[sl]), "text": ctx_u[sl], "fs": fs[sl]}
    x_T = jax.random.normal(jax.random.PRNGKey(0), z0[sl].shape)
    sample = jax.jit(lambda x: ddim_sample(cfg_denoiser(model_fn, cond, uncond), x, plan, None,
                                           "v_prediction")[0])
    zs = np.asarray(sample(x_T)) / sf
    gen = np.stack([np.asarray(dec(z)) for z in zs])
    rows = []
    for k in range(n_show):
        rows += [video[k], np.clip(gen[k], -1, 1)]
    grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    grid = np.round((grid + 1) * 127.5).astype(np.uint8)
    docs = Path(docs_dir)
    docs.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(
        docs / "tiny_samples.png")
    m["samples"] = {"png": str(docs / "tiny_samples.png"), "captions": list(data.caption[:n_show]),
                    "ddim_steps": DDIM_STEPS, "cfg": video_cfg.guidance, "guidance_rescale": CFG_RESCALE,
                    "first_frame_l1_to_condition": float(np.mean(np.abs(gen[:, 1:] - video[:n_show, :1]))),
                    "gt_l1_to_first_frame": float(np.mean(np.abs(video[:n_show, 1:] - video[:n_show, :1])))}

    # --- depth: 5-step Euler + CFG 1.2, then optionally dissolve (Eq. 5)
    dcfg = fam["depth_unet"][1]
    vis_embed = jax.jit(lambda x: vis_m.apply(p["image_encoder"], preprocess_image(
        x, vis_m.config.image_size))[1])
    splan, dplan = make_euler_plan(num_steps=DEPTH_STEPS), make_euler_plan(num_steps=50)

    def guided_fn(vz, emb):
        def fn(x, t, _=None):
            out = dunet.apply(p["depth_unet"], jnp.concatenate(
                [jnp.concatenate([x, vz], -1), jnp.concatenate([x, jnp.zeros_like(vz)], -1)]),
                jnp.concatenate([t, t]), jnp.concatenate([emb, jnp.zeros_like(emb)]))
            return guidance(out[:1], out[1:], DEPTH_GUIDANCE)
        return fn

    @jax.jit
    def estimate(clip, key):
        k1, k2 = jax.random.split(key)
        aug = clip + dcfg.noise_aug_strength * jax.random.normal(k1, clip.shape)
        vz = enc(aug)[None]  # unscaled posterior mode, as DepthCrafter
        emb = vis_embed(clip)[None]
        fn = guided_fn(vz, emb)
        x_T = jax.random.normal(k2, vz.shape) * splan.init_noise_sigma
        z, _ = euler_sample(fn, x_T, splan, "v_prediction")
        outs = [z] + [dissolve_depth(fn, z, dplan, d, "v_prediction") for d in DISSOLVE_STEPS]
        return jnp.stack([jnp.mean(dec(o[0] / vae_cfg.scaling_factor), -1) for o in outs])

    names = ["sampled"] + [f"dissolved_{d}" for d in DISSOLVE_STEPS]
    errs = {n: [] for n in names + ["constant", "vae_roundtrip_of_gt"]}
    for k in range(num_eval):
        gt = data.disparity[k]
        preds = np.asarray(estimate(jnp.asarray(video[k]), jax.random.PRNGKey(k)))
        for n, pr in zip(names, preds):
            errs[n].append(aligned_errors(pr, gt))
        errs["constant"].append(aligned_errors(np.zeros_like(gt), gt))
        errs["vae_roundtrip_of_gt"].append(aligned_errors(drec.reshape(dmap.shape)[k].mean(-1), gt))
    m["depth"] = {n: {"abs_rel": float(np.mean([e[0] for e in v])),
                      "delta1": float(np.mean([e[1] for e in v])),
                      "abs_rel_disparity": float(np.mean([e[2] for e in v]))}
                  for n, v in errs.items()}
    m["depth"]["protocol"] = (f"{DEPTH_STEPS}-step Euler (SVD-xt Karras 0.002-700), CFG "
                              f"{DEPTH_GUIDANCE}; dissolve: Eq. 5 at index 50 - step of a 50-step plan; "
                              "disparity fit by least squares (scale, shift) per clip; AbsRel/delta1 "
                              "on depth = 1 / disparity, abs_rel_disparity on the fitted disparity")
    logging.info("depth %s", m["depth"])
    out = Path(tiny_dir) / "metrics.json"
    out.write_text(json.dumps(m, indent=1))
    logging.info("wrote %s", out)
    return m
