"""Stereo denoisers from a raw network: classifier-free guidance inside each view half."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from szero_jax.diffusion.guidance import guidance


def stereo_cfg_denoiser(model_fn: Callable, cond, uncond, per_step_uncond: bool = False,
                        right=None, cond_only: bool = False):
    """``denoise_fn(x, t, plan_i, cross_view=None)`` from ``model_fn(x, t, context, cross_view)``.

    One network call per step: with a cross-view mode, ``x`` is ``[left; right]`` (b rows
    each) and the call sees ``[left_cond, left_uncond, right_cond, right_uncond]``, keeping the
    views view-major with the CFG halves inside each (DESIGN.md); without one, ``x`` is one
    view. ``per_step_uncond``: ``uncond`` has a leading step axis (null-text inversion) and
    step ``plan_i.step`` is used. ``right``: optional dict of context entries that replace
    ``cond``'s and ``uncond``'s for the right view (e.g. its warped image latent).
    ``cond_only``: skip the unconditional half and return the conditional output, which is
    what CFG returns at guidance 1 without rescale (conversion), in half the network work.
    """
    def cond_denoise(x, t, plan_i, cross_view=None):
        del plan_i
        views = 1 if cross_view is None else 2
        per_view = [cond] * views
        if right and views == 2:
            per_view[1] = {**cond, **right}
        ctx = jax.tree.map(lambda *c: jnp.concatenate(c, axis=0), *per_view)
        return model_fn(x, t, ctx, cross_view)

    def denoise(x, t, plan_i, cross_view=None):
        u = jax.tree.map(lambda a: a[plan_i.step], uncond) if per_step_uncond else uncond
        views = 1 if cross_view is None else 2
        b = x.shape[0] // views
        rows = lambda a: a.reshape((views, b) + a.shape[1:])
        x_v, t_v = rows(x), rows(t)
        both = lambda a: jnp.concatenate([a, a], axis=1).reshape((-1,) + a.shape[2:])
        ctx = jax.tree.map(lambda c, uu: jnp.concatenate([c, uu], axis=0), cond, u)
        per_view = [ctx] * views
        if right and views == 2:
            per_view[1] = {**ctx, **{k: jnp.concatenate([v, v], axis=0) for k, v in right.items()}}
        ctx = jax.tree.map(lambda *c: jnp.concatenate(c, axis=0), *per_view)
        out = model_fn(both(x_v), both(t_v), ctx, cross_view)
        out = out.reshape((views, 2, b) + x.shape[1:])
        g = guidance(out[:, 0], out[:, 1], plan_i.guidance_scale, plan_i.guidance_rescale)
        return g.reshape(x.shape)

    return cond_denoise if cond_only else denoise
