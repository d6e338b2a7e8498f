"""Parameterisations (eps / v / sample) and classifier-free guidance."""
from __future__ import annotations

import jax.numpy as jnp

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def predict_x0_eps(model_output, x, alpha_bar, prediction_type: str):
    """(pred_x0, pred_eps) from a model output at noise level ``alpha_bar`` (scalar or
    broadcastable), with ``x = sqrt(ab) x0 + sqrt(1 - ab) eps`` and ``v = sqrt(ab) eps -
    sqrt(1 - ab) x0``."""
    check_prediction_type(prediction_type)
    a = jnp.sqrt(alpha_bar)
    b = jnp.sqrt(1.0 - alpha_bar)
    if prediction_type == "epsilon":
        eps = model_output
        x0 = (x - b * eps) / a
    elif prediction_type == "v_prediction":
        x0 = a * x - b * model_output
        eps = a * model_output + b * x
    else:
        x0 = model_output
        eps = (x - a * x0) / b
    return x0, eps


def _std(x):
    """Per-row standard deviation over all but the batch axis, unbiased (torch ``std``)."""
    axes = tuple(range(1, x.ndim))
    return jnp.std(x, axis=axes, keepdims=True, ddof=1)


def rescale_guided(guided, cond, guidance_rescale):
    """Lin et al. 2024 Sec. 3.4 (diffusers / lvdm ``rescale_noise_cfg``): blend ``guided``
    with itself rescaled to ``cond``'s per-row std by ``guidance_rescale`` (data, may be 0)."""
    std_cond, std_guided = _std(cond), _std(guided)
    ratio = jnp.where(std_guided > 0, std_cond / jnp.where(std_guided > 0, std_guided, 1.0), 1.0)
    return guidance_rescale * (guided * ratio) + (1.0 - guidance_rescale) * guided


def guidance(cond, uncond, scale, guidance_rescale=0.0):
    """Classifier-free guidance ``uncond + scale (cond - uncond)``, then guidance rescale.

    Works on the raw model output whatever the parameterisation, as lvdm's
    ``DDIMSampler.p_sample_ddim`` does (for v-prediction it rescales v, not eps).
    ``scale`` and ``guidance_rescale`` may be traced scalars; rescale 0 returns the plain
    guided output.
    """
    guided = uncond + scale * (cond - uncond)
    return rescale_guided(guided, cond, guidance_rescale)
