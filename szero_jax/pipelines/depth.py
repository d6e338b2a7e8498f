"""Video depth for the stereo video pipelines: DepthCrafter-style sampling on the left video
followed by dissolving (StereoCrafter-Zero Eq. 5), or a user depth with the blurred-depth
fallback (Sec. 4.3); then disparity in pixels.

DepthCrafter (Tencent/DepthCrafter ``depth_crafter_ppl.py``): frames in [-1, 1]; one CLIP
image embedding per frame; noise augmentation of the frames (0.02, the config's
``noise_aug_strength``) before the VAE (posterior mode, *unscaled*); Euler (EDM, Karras,
v-prediction) on the depth latent concatenated with the video latents; CFG against zero
latents and zero embeddings; the depth latent is divided by the VAE's scaling factor and
decoded; output = channel mean, a relative disparity (near = large).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from szero_jax.diffusion import euler_sample, make_euler_plan
from szero_jax.diffusion.guidance import guidance
from szero_jax.geometry import disparity_from_depth, resize_disparity
from szero_jax.models.clip import CLIPVisionEncoder, preprocess_image
from szero_jax.pipelines.conditioning import decode_latents, depth_model_fn, encode_latents
from szero_jax.stereo import blur_depth, dissolve_depth

DEPTH_STEPS = 5          # DepthCrafter run.py num_inference_steps
DEPTH_GUIDANCE = 1.2     # StereoCrafter-Zero calls DepthCrafter with guidance 1.2 (REFERENCES.md)
DISSOLVE_STEP = 20       # released StereoCrafter-Zero examples use 5, 20, 30 (depthcrafter.py)
DISSOLVE_PLAN_STEPS = 50  # released: index 50 - dissolve_step of a 50-step schedule


@functools.partial(jax.jit, static_argnames=("unet_cfg", "vae_cfg", "vision_cfg", "dtype",
                                             "dissolve_step", "guidance_scale"))
def video_depth(params, video, key, plan, dissolve_plan, *, unet_cfg, vae_cfg, vision_cfg,
                dtype, dissolve_step, guidance_scale):
    """params {"unet", "vae", "vision"}; video [1, T, H, W, 3] in [-1, 1] -> relative
    disparity [1, T, H, W] (dissolved when ``dissolve_step`` > 0, else DepthCrafter's own)."""
    b, t = video.shape[:2]
    frames = video.reshape((b * t,) + video.shape[2:])
    _, embeds = CLIPVisionEncoder(vision_cfg, dtype).apply(
        {"params": params["vision"]}, preprocess_image(frames, vision_cfg.image_size))
    embeds = embeds.astype(jnp.float32).reshape(b, t, -1)
    k_aug, k_noise = jax.random.split(key)
    aug = video + unet_cfg.noise_aug_strength * jax.random.normal(k_aug, video.shape)
    latents = encode_latents(vae_cfg, dtype, params["vae"], aug, 1.0)
    cond = {"latents": latents, "embeds": embeds}
    uncond = jax.tree.map(jnp.zeros_like, cond)
    model_fn = depth_model_fn(unet_cfg, dtype, params["unet"], "depth")

    def guided(x, tt, _=None):
        out = model_fn(jnp.concatenate([x, x]), jnp.concatenate([tt, tt]),
                       jax.tree.map(lambda c, u: jnp.concatenate([c, u]), cond, uncond))
        return guidance(out[:b], out[b:], guidance_scale)

    x_T = jax.random.normal(k_noise, latents.shape[:-1] + (unet_cfg.out_channels,))
    z, _ = euler_sample(guided, x_T * plan.init_noise_sigma, plan, "v_prediction")
    if dissolve_step > 0:
        z = dissolve_depth(guided, z, dissolve_plan, dissolve_step, "v_prediction")
    img = decode_latents(vae_cfg, dtype, params["vae"], z, vae_cfg.scaling_factor)
    return jnp.mean(img, axis=-1)


def depth_plans(steps: int = DEPTH_STEPS):
    """(sampling plan, dissolve plan): SVD-xt Euler schedules (szero_jax.diffusion.euler)."""
    return make_euler_plan(num_steps=steps), make_euler_plan(num_steps=DISSOLVE_PLAN_STEPS)


def depth_evaluations(steps: int, dissolve_step: int) -> int:
    return steps + (1 if dissolve_step > 0 else 0)


def user_depth_to_disparity(depth: np.ndarray, kind: str, blur_sigma: float,
                            max_disparity: float, convergence):
    """User depth [T, H, W] -> (pixel disparity [T, H, W], normalised map for display)."""
    d = jnp.asarray(depth)[None]
    if blur_sigma > 0:                       # the paper's heuristic-filter fallback (Sec. 4.3)
        d = blur_depth(d, blur_sigma)
    disp = disparity_from_depth(d, max_disparity, kind, convergence)
    norm = disparity_from_depth(d, 1.0, kind) / d.shape[-1]
    return np.asarray(disp[0]), np.asarray(norm[0])


def model_depth_to_disparity(rel_disparity, max_disparity: float, convergence):
    """DepthCrafter output (relative disparity [1, T, H, W]) -> (pixels, normalised)."""
    disp = disparity_from_depth(rel_disparity, max_disparity, "disparity", convergence)
    norm = disparity_from_depth(rel_disparity, 1.0, "disparity") / rel_disparity.shape[-1]
    return np.asarray(disp[0]), np.asarray(norm[0])


def latent_disparity(disparity_px: np.ndarray, latent_hw) -> jnp.ndarray:
    """[T, H, W] pixels -> [1, T, h, w] latent pixels (bilinear, values scaled by w / W)."""
    return resize_disparity(jnp.asarray(disparity_px)[None], tuple(latent_hw))
