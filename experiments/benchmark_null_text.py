"""Null-text vs plain DDIM inversion on the tiny SD: how well each reconstructs a photo.

    python -m experiments.benchmark_null_text                     # 2 held-out world frames
    python -m experiments.benchmark_null_text --checkpoint ckpt/sd14 --num_frames 4

StereoDiffusion's image-to-stereo inverts the photo at the sampling guidance (7.5,
img2stereo.py's null-text inversion); plain DDIM inversion (guidance 1, Eq. 9) followed by
guided sampling drifts from the input, which is the paper's reason for null-text inversion
(Mokady et al. 2023). For each held-out world frame (seeds from HELDOUT_SEED_START, frame 0,
80x128) this prints the PSNR of the decoded reconstruction against the frame for: the VAE
round trip (the ceiling), plain DDIM inversion + sampling at --guidance, and null-text
inversion + sampling with its per-step unconditional embeddings; each with two prompts: the
empty one (the released img2stereo.py: conditional = unconditional, so CFG is the identity
and only DDIM's own inversion error is left) and the frame's caption (the null-text paper's
setting, where guidance pulls the plain inversion away). Written to --output_json.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments import common_flags as cf

cf.declare(__name__, "checkpoint", "steps", "guidance", "dtype", "output_json")
flags.DEFINE_integer("num_frames", 2, "Held-out world frames (seeds from HELDOUT_SEED_START)")
FLAGS = flags.FLAGS


def _psnr(a, b):
    return float(10 * np.log10(1.0 / max(float(np.mean((a - b) ** 2)), 1e-12)))


def main(argv):
    del argv
    from szero_jax import world  # pylint: disable=import-outside-toplevel
    from szero_jax.diffusion import (GuidanceScales, ddim_sample, make_ddim_plan,  # pylint: disable=import-outside-toplevel
                                     stable_diffusion_schedule)
    from szero_jax.models.unet2d import UNet2DCondition  # pylint: disable=import-outside-toplevel
    from szero_jax.pipelines import load_sd_models  # pylint: disable=import-outside-toplevel
    from szero_jax.pipelines.conditioning import (decode_latents, encode_latents,  # pylint: disable=import-outside-toplevel
                                                  text_embedding)
    from szero_jax.stereo import NullTextConfig, stereo_cfg_denoiser  # pylint: disable=import-outside-toplevel
    from szero_jax.stereo.inversion import ddim_inversion, null_text_inversion  # pylint: disable=import-outside-toplevel
    if FLAGS.num_frames < 1:
        raise app.UsageError(f"--num_frames: expected >= 1, got {FLAGS.num_frames}")
    models = load_sd_models(cf.checkpoint_path(FLAGS.checkpoint), FLAGS.dtype)
    vae, unet_cfg, dt = models.vae.config, models.unet.config, models.dtype
    guidance = 7.5 if FLAGS.guidance is None else FLAGS.guidance  # img2stereo.py GUIDANCE_SCALE
    # SD scheduler_config.json (as pipelines.image): leading spacing, steps_offset 1, eta 0.
    plan = make_ddim_plan(stable_diffusion_schedule(), FLAGS.steps, "leading", 0.0,
                          steps_offset=1, set_alpha_to_one=False,
                          guidance=GuidanceScales(guidance))
    module = UNet2DCondition(unet_cfg, dt)
    model_fn = lambda x, t, ctx, cross_view=None: module.apply(  # noqa: E731
        {"params": models.unet.params}, x, t, ctx["text"], cross_view=cross_view).astype(x.dtype)
    embed = lambda p: text_embedding(models.text_encoder.config, dt, models.text_encoder.params,  # noqa: E731
                                     jnp.asarray(models.tokenizer([p])), layer="last")
    uncond = {"text": embed("")}

    @jax.jit
    def run(image, cond):
        z0 = encode_latents(vae, dt, models.vae.params, image[None, None] * 2 - 1,
                            vae.scaling_factor)[:, 0]
        pivot = ddim_inversion(model_fn, z0, plan, cond)
        plain, _ = ddim_sample(stereo_cfg_denoiser(model_fn, cond, uncond), pivot[0], plan,
                               None, unet_cfg.prediction_type)
        nti = null_text_inversion(model_fn, z0, plan, cond, uncond, NullTextConfig(),
                                  unet_cfg.prediction_type)
        rec, _ = ddim_sample(stereo_cfg_denoiser(model_fn, cond, nti.uncond, per_step_uncond=True),
                             nti.x_T, plan, None, unet_cfg.prediction_type)
        dec = lambda z: jnp.clip((decode_latents(vae, dt, models.vae.params, z[:, None],  # noqa: E731
                                                 vae.scaling_factor)[0, 0] + 1) / 2, 0, 1)
        return dec(z0), dec(plain), dec(rec)

    rows, t0 = [], time.perf_counter()
    for k in range(FLAGS.num_frames):
        seed = world.HELDOUT_SEED_START + k
        scene = world.make_scene(seed, 80, 128, 1)
        image = np.asarray(scene.left[0], np.float32)
        for prompt_kind, prompt in (("empty", ""), ("caption", scene.caption)):
            vae_rec, plain, nti = (np.asarray(a) for a in run(jnp.asarray(image),
                                                               {"text": embed(prompt)}))
            row = {"seed": seed, "prompt": prompt_kind, "psnr_vae_db": _psnr(vae_rec, image),
                   "psnr_ddim_inversion_db": _psnr(plain, image),
                   "psnr_null_text_db": _psnr(nti, image)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    out = {"checkpoint": FLAGS.checkpoint or "tiny SD", "steps": FLAGS.steps,
           "guidance": guidance, "frames": rows, "mean": {}, "wall_s": None}
    for kind in ("empty", "caption"):
        sel = [r for r in rows if r["prompt"] == kind]
        mean = {key: float(np.mean([r[key] for r in sel])) for key in sel[0]
                if key.startswith("psnr")}
        mean["null_text_minus_ddim_db"] = mean["psnr_null_text_db"] - mean["psnr_ddim_inversion_db"]
        out["mean"][kind] = mean
        print(f"{kind} prompt, mean PSNR: VAE {mean['psnr_vae_db']:.2f} dB, plain DDIM inversion "
              f"{mean['psnr_ddim_inversion_db']:.2f} dB, null-text {mean['psnr_null_text_db']:.2f}"
              f" dB ({mean['null_text_minus_ddim_db']:+.2f} dB)")
    out["wall_s"] = time.perf_counter() - t0
    Path(FLAGS.output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(FLAGS.output_json).write_text(json.dumps(out, indent=1))
    print(f"{out['wall_s']:.0f} s")


if __name__ == "__main__":
    cf.set_defaults(output_json="out/benchmark_null_text.json")
    app.run(main)
