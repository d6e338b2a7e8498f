"""Low-frequency depth for latent warping (StereoCrafter-Zero Sec. 3.3, 4.3).

* ``dissolve_depth``: Eq. 5, one reverse step on a clean depth latent at a chosen level, the
  network's predicted x0 kept. Released (``depthcrafter.py``): DepthCrafter's latent after its
  own sampling, no noise added, one UNet call at index ``50 - dissolve_step`` of a 50-step
  schedule, ``pred_original_sample`` taken; examples use dissolve_step 5-30, the paper
  recommends 40 for hard cases (Sec. 4.3 Limitations).
* ``released_disparity``: how the released run turns DepthCrafter's decoded (dissolved)
  latent into shifts: no re-normalisation, so dissolving also shrinks the disparity range.
  It guides only the sampling (CFG 1.2); the dissolving call is the conditional UNet alone.
* ``blur_depth``: the paper's "blurred depth maps produced by simple heuristic filters"
  (Sec. 4.3) for depth sources without a diffusion model.
* ``propagate_disparity``: temporal consistency for per-frame (image) depth models, see its
  docstring.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from szero_jax.diffusion import DDIMPlan, EulerPlan, dissolve_index, euler_model_input, euler_x0
from szero_jax.diffusion import plan_at, predict_x0_eps
from szero_jax.diffusion.guidance import check_prediction_type


def dissolve_depth(model_fn: Callable, latent, plan, dissolve_step: int,
                   prediction_type: str = "v_prediction"):
    """Eq. 5: predicted x0 of ``model_fn(x, t)`` on the clean ``latent`` at level
    ``plan[num_steps - dissolve_step]``.

    plan: a 50-step ``DDIMPlan`` (x is the latent itself, ``x0 = x / sqrt(ab) - sqrt(1/ab - 1)
    eps`` for eps models, exactly Eq. 5) or an ``EulerPlan`` (DepthCrafter/SVD: the network
    sees ``c_in * latent`` and its continuous timestep, as the released code does through
    ``scale_model_input``). model_fn: any conditioning (video latents, CLIP tokens) bound in.
    Default prediction_type: DepthCrafter is a v-model (docs/references.md).
    """
    check_prediction_type(prediction_type)
    p = plan_at(plan, dissolve_index(dissolve_step, plan.num_steps))
    if isinstance(plan, EulerPlan):
        x_in, t = euler_model_input(p, latent)
        return euler_x0(p, latent, model_fn(x_in, t), prediction_type)
    if not isinstance(plan, DDIMPlan):
        raise ValueError(f"plan must be a DDIMPlan or EulerPlan, got {type(plan).__name__}")
    t = jnp.broadcast_to(p.timesteps, (latent.shape[0],))
    x0, _ = predict_x0_eps(model_fn(latent, t), latent, p.alpha_bar, prediction_type)
    return x0


def released_disparity(decoded, max_disparity: float, exponent: float = 1.0):
    """Disparity in pixels [..., H, W] from DepthCrafter's decoded video [..., H, W, C] in
    [-1, 1], as the released run uses it: ``(x + 1) / 2`` clamped to [0, 1] (diffusers
    ``postprocess_video``), the channel mean (``infer_frames``), raised to ``exponent``
    (``scale_disparity_factor``), times ``max_disparity * W`` (stereo_utils: shift =
    disp * scale / 100 * W). Unlike ``geometry.disparity_from_depth`` nothing re-normalises
    the range; far stays at zero shift."""
    if decoded.ndim < 3:
        raise ValueError(f"decoded must be [..., H, W, C], got shape {decoded.shape}")
    if not 0.0 < float(max_disparity) <= 1.0:
        raise ValueError(f"max_disparity must be a fraction of the width in (0, 1], got "
                         f"{max_disparity}")
    if exponent <= 0:
        raise ValueError(f"exponent must be > 0, got {exponent}")
    rel = jnp.clip(decoded.astype(jnp.float32) / 2.0 + 0.5, 0.0, 1.0).mean(axis=-1)
    return rel ** exponent * (max_disparity * decoded.shape[-2])


def _kernel(kind: str, size: float):
    if kind == "gaussian":
        if size <= 0:
            raise ValueError(f"sigma must be > 0 for a Gaussian blur, got {size}")
        r = max(1, int(3 * size + 0.5))
        x = jnp.arange(-r, r + 1, dtype=jnp.float32)
        k = jnp.exp(-0.5 * (x / size) ** 2)
    elif kind == "box":
        if int(size) != size or size < 1 or size % 2 == 0:
            raise ValueError(f"a box blur needs an odd integer width, got {size}")
        k = jnp.ones((int(size),), jnp.float32)
    else:
        raise ValueError(f"kind must be 'gaussian' or 'box', got {kind!r}")
    return k / k.sum()


def _blur_axis(x, k, axis):
    r = (k.shape[0] - 1) // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (r, r)
    xp = jnp.pad(x, pad, mode="edge")
    moved = jnp.moveaxis(xp, axis, -1)
    flat = moved.reshape(-1, moved.shape[-1])
    out = jax.vmap(lambda row: jnp.convolve(row, k, mode="valid"))(flat)
    return jnp.moveaxis(out.reshape(moved.shape[:-1] + (out.shape[-1],)), -1, axis)


def blur_depth(depth, size: float = 4.0, kind: str = "gaussian"):
    """Spatial low-pass of depth/disparity [..., H, W] (each frame alone), edge-padded.

    size: the Gaussian sigma in pixels, or the box width (odd). The paper reports such
    filters help but less than dissolving (Sec. 4.3); 4 px is this module's pick, no
    reference value exists.
    """
    if depth.ndim < 2:
        raise ValueError(f"depth must be [..., H, W], got shape {depth.shape}")
    k = _kernel(kind, size)
    x = depth.astype(jnp.float32)
    return _blur_axis(_blur_axis(x, k, x.ndim - 1), k, x.ndim - 2).astype(depth.dtype)


def _affine_fit(src, dst, eps=1e-6):
    """Least-squares (a, b) with a*src + b ~ dst over the last two axes."""
    ms, md = src.mean(axis=(-2, -1)), dst.mean(axis=(-2, -1))
    cs, cd = src - ms[..., None, None], dst - md[..., None, None]
    a = (cs * cd).mean(axis=(-2, -1)) / ((cs * cs).mean(axis=(-2, -1)) + eps)
    return a, md - a * ms


def propagate_disparity(disparity, momentum: float = 0.5):
    """Temporally consistent disparity from per-frame estimates [B, T, H, W].

    Image depth models return relative (affine-invariant) disparity, so each frame has its
    own unknown scale and shift: the main source of flicker. Frame t is aligned to the
    running estimate of frame t-1 by least-squares scale and shift (kept positive in scale),
    then blended into it: ``s_t = momentum * s_{t-1} + (1 - momentum) * align(d_t)``, a
    first-order low-pass along time on top of the alignment. The first frame anchors the
    scale. Moving content lags by about momentum / (1 - momentum) frames, so keep the
    momentum low for fast motion. (The released code propagates disparity along optical flow (RAFT/SEA-RAFT),
    ``funcs_stereo.propagate_all_frames``; no flow model is bundled here, and the paper's
    supplementary that describes its algorithm is not available.) momentum 0.5 is this
    module's pick; 0 gives alignment only.
    """
    if disparity.ndim != 4:
        raise ValueError(f"disparity must be [B, T, H, W], got shape {disparity.shape}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    frames = jnp.moveaxis(disparity.astype(jnp.float32), 1, 0)   # [T, B, H, W]

    def body(prev, d):
        a, b = _affine_fit(d, prev)
        a = jnp.maximum(a, 1e-6)     # never flip near and far
        aligned = a[..., None, None] * d + b[..., None, None]
        s = momentum * prev + (1.0 - momentum) * aligned
        return s, s

    _, rest = jax.lax.scan(body, frames[0], frames[1:])
    out = jnp.concatenate([frames[:1], rest], axis=0)
    return jnp.moveaxis(out, 0, 1).astype(disparity.dtype)
