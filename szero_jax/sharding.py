"""Scale-out: a ``jax.sharding.Mesh`` with a data axis (prompts / batch rows) and a views axis
(left / right), and the stereo samplers jitted with shardings on it.

Layout (DESIGN.md): a stereo batch of ``2b`` rows is view-major, ``[left_0..left_{b-1},
right_0..right_{b-1}]``. Sharding that axis over the mesh axes ``("views", "data")`` (views
major) puts the left rows on the ``views = 0`` devices and the right rows on ``views = 1``,
each split over ``data``: device (d, v) holds rows ``v*b + d*b/D .. v*b + (d+1)*b/D``. Arrays
with one row per prompt (initial noise, disparity, conditioning) are sharded over ``data``
only and replicated over ``views``; params and per-step arrays are replicated.

    mesh = make_mesh()                       # all devices: data x views (views = 2 if even)
    out = stereocrafter_zero_sharded(mesh, make_denoiser, params, cond, uncond,
                                     SamplerInputs(x_T, disparity, plan, key, events),
                                     "v_prediction")

The result does not depend on the mesh: the same program is partitioned (GSPMD) and
``jax.random`` draws the same numbers for any sharding. Multi-host (TPU pods): call
``jax.distributed.initialize()`` first in every process; ``make_mesh()`` then spans every
host's devices (see README "Multi-device and TPU pods").
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA = "data"
VIEWS = "views"


def make_mesh(devices: Optional[Sequence] = None, views: Optional[int] = None) -> Mesh:
    """A 2-D mesh ``(data, views)`` over ``devices`` (default: all, every host's).

    views: 1 or 2 (default 2 when the device count is even, so the left and right halves of
    each stereo call run on different devices; else 1)."""
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if n == 0:
        raise ValueError("devices: expected at least one device")
    if views is None:
        views = 2 if n % 2 == 0 else 1
    if views not in (1, 2) or n % views:
        raise ValueError(f"views: expected 1 or 2 dividing the {n} devices, got {views!r}")
    return Mesh(np.asarray(devices, dtype=object).reshape(n // views, views), (DATA, VIEWS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Arrays with one leading row per prompt: rows split over ``data``."""
    return NamedSharding(mesh, P(DATA))


def stereo_sharding(mesh: Mesh) -> NamedSharding:
    """View-major stereo arrays ``[left rows; right rows]``: views major, then data."""
    return NamedSharding(mesh, P((VIEWS, DATA)))


def data_size(mesh: Mesh) -> int:
    return int(mesh.shape[DATA])


def check_batch(rows: int, mesh: Mesh, name: str = "batch") -> int:
    if rows % data_size(mesh):
        raise ValueError(f"{name}: {rows} rows do not split over the mesh's {data_size(mesh)} "
                         f"data devices; pad the batch to a multiple of {data_size(mesh)}")
    return rows


def constrain_views(x, mesh: Mesh):
    """Inside jit: ``x``'s view-major batch axis laid out as ``stereo_sharding`` (left
    unconstrained when its rows do not split evenly)."""
    if x.shape[0] % mesh.size:
        return x
    return jax.lax.with_sharding_constraint(x, stereo_sharding(mesh))


def sharded_denoiser(denoise_fn: Callable, mesh: Mesh) -> Callable:
    """A stereo denoiser whose input and output keep the view-major layout on the mesh."""
    def denoise(x, t, plan_i, cross_view=None):
        out = denoise_fn(constrain_views(x, mesh), t, plan_i, cross_view)
        return constrain_views(out, mesh)
    return denoise


@functools.lru_cache(maxsize=16)
def _crafter_zero_program(mesh: Mesh, make_denoiser: Callable, prediction_type: str):
    from szero_jax.stereo import StereoOutput, stereocrafter_zero_run  # pylint: disable=import-outside-toplevel
    rep, bat = replicated(mesh), batch_sharding(mesh)

    def run(params, cond, uncond, x_T, disparity, plan, key, events):
        denoise = sharded_denoiser(make_denoiser(params, cond, uncond), mesh)
        return stereocrafter_zero_run(denoise, x_T, disparity, plan, key, events,
                                      prediction_type)

    return jax.jit(run, in_shardings=(rep, bat, bat, bat, bat, rep, rep, rep),
                   out_shardings=StereoOutput(bat, bat, bat))


@functools.lru_cache(maxsize=16)
def _stereodiffusion_program(mesh: Mesh, make_denoiser: Callable, prediction_type: str):
    from szero_jax.stereo import StereoDiffusionOutput, stereodiffusion_run  # pylint: disable=import-outside-toplevel
    rep, bat = replicated(mesh), batch_sharding(mesh)

    def run(params, cond, uncond, x_T, disparity, plan, key, events):
        denoise = sharded_denoiser(make_denoiser(params, cond, uncond), mesh)
        return stereodiffusion_run(denoise, x_T, disparity, plan, key, events, prediction_type)

    out = StereoDiffusionOutput(*([bat] * len(StereoDiffusionOutput._fields)))
    return jax.jit(run, in_shardings=(rep, bat, bat, bat, bat, rep, rep, rep), out_shardings=out)


class SamplerInputs(NamedTuple):
    """What a sharded stereo sampler samples from, besides the network and its contexts."""
    x_T: Any         # [B, ...] left initial noise, one row per prompt (split over data)
    disparity: Any   # x_T's shape without channels, latent pixels (split over data)
    plan: Any        # DDIMPlan (replicated)
    key: Any         # PRNG key of all the sampler's randomness (replicated)
    events: Any      # StereoEvents / StereoDiffusionEvents of the plan (replicated)


def _sharded_call(program, mesh, params, cond, uncond, inputs: SamplerInputs):
    if not isinstance(inputs, SamplerInputs):
        raise ValueError(f"inputs: expected a SamplerInputs, got {type(inputs).__name__}")
    x_T, disparity, plan, key, events = inputs
    check_batch(np.shape(x_T)[0], mesh, "x_T")
    for leaf in jax.tree.leaves((cond, uncond)):
        if np.shape(leaf)[0] != np.shape(x_T)[0]:
            raise ValueError(f"cond/uncond: every leaf needs one row per prompt "
                             f"({np.shape(x_T)[0]}), got shape {np.shape(leaf)}")
    events = jax.tree.map(jnp.asarray, events)
    with mesh:
        return program(params, cond, uncond, x_T, disparity, plan, key, events)


def stereocrafter_zero_sharded(mesh: Mesh, make_denoiser: Callable, params, cond, uncond,
                               inputs: SamplerInputs, prediction_type: str = "v_prediction"):
    """``stereo.stereocrafter_zero_run`` over a batch of prompts on ``mesh``.

    make_denoiser(params, cond, uncond) -> stereo denoiser (e.g. ``stereo_cfg_denoiser`` of a
    ``video_model_fn``); it must be hashable (a module-level function or a functools.partial
    of one), as it keys the compiled program. cond / uncond: pytrees with one row per prompt
    (``[B, ...]``); inputs: ``SamplerInputs(x_T, disparity, plan, key, events)`` with x_T
    ``[B, T, h, w, c]``, disparity ``[B, T, h, w]``, events from ``build_events``; B a
    multiple of the data axis. Outputs ``StereoOutput`` with rows split over ``data``."""
    program = _crafter_zero_program(mesh, make_denoiser, prediction_type)
    return _sharded_call(program, mesh, params, cond, uncond, inputs)


def stereodiffusion_sharded(mesh: Mesh, make_denoiser: Callable, params, cond, uncond,
                            inputs: SamplerInputs, prediction_type: str = "epsilon"):
    """``stereo.stereodiffusion_run`` over a batch of prompts on ``mesh`` (as above, with
    image latents ``[B, h, w, c]``, disparity ``[B, h, w]`` and events from
    ``build_stereodiffusion_events``)."""
    program = _stereodiffusion_program(mesh, make_denoiser, prediction_type)
    return _sharded_call(program, mesh, params, cond, uncond, inputs)
