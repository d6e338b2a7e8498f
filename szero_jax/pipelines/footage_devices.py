"""The per-window programs of a footage conversion, batched over a mesh's data axis.

After depth the windows of a video are independent, so N devices convert N windows per
call: each program is a ``shard_map`` over ``sharding.make_mesh(..., views=1)``'s ``data``
axis in which every device runs the *public stages* (``pipelines.stages``) on exactly one
window. Why one window per device and not a sharded batch: the device's program is then
the same whatever the number of devices (or the window's neighbours in the batch), so 1, 2
and 4 devices, and a resumed run that batches the remaining windows differently, give the
same bits; and the random draws are per window (``jax.random.normal(key, (B, ...))``
depends on B). A call takes ``N = data size`` windows; callers pad the last call.

On XLA:CPU the bits also depend on the intra-op thread pool its devices share, of
max(``PJRT_NPROC`` or the cores, devices) threads: a convolution's rounding depends on the
pool's size (measured; ``xla_cpu_multi_thread_eigen=false`` and an empty
``xla_cpu_experimental_ynn_fusion_type`` do not remove it). Forcing more CPU devices than
cores therefore changes the rounding (the VAE decoder's 16 -> 3 channel convolution, ~4e-7)
unless ``PJRT_NPROC`` pins the pool (tests/test_footage_devices.py); the mesh size does not.

Inside the mapped function the bundle is rebuilt around the traced params (``_bundle``),
so the stages see their usual ``VideoModels`` and nothing is closed over as a constant.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from szero_jax import sharding
from szero_jax.geometry import resize_disparity
from szero_jax.pipelines import stages as S
from szero_jax.pipelines.bundles import DepthModels, Net, VideoModels
from szero_jax.pipelines.config import DepthConfig, SamplingConfig
from szero_jax.stereo import StereoCrafterZeroConfig, build_events

_NETS = ("unet", "resampler", "vae", "text_encoder", "image_encoder")
_DEPTH_NETS = ("unet", "vae", "image_encoder")


def window_mesh(devices: Optional[int] = None):
    """A ``(data, views=1)`` mesh over the first ``devices`` local devices (None: all).
    Local devices: on several hosts each process converts its own windows."""
    local = jax.local_devices()
    n = len(local) if devices is None else devices
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= len(local):
        raise ValueError(f"devices: expected an int in [1, {len(local)}] (the local devices), "
                         f"got {devices!r}")
    return sharding.make_mesh(local[:int(n)], views=1)


def _params(models: VideoModels) -> dict:
    out = {name: getattr(models, name).params for name in _NETS}
    if models.depth is not None:
        out["depth"] = {name: getattr(models.depth, name).params for name in _DEPTH_NETS}
    return out


def _bundle(models: VideoModels, params: dict) -> VideoModels:
    """``models`` with every network's params replaced by ``params`` (traced)."""
    nets = {name: Net(getattr(models, name).config, params[name]) for name in _NETS}
    depth = models.depth
    if depth is not None and "depth" in params:
        depth = DepthModels(*(Net(getattr(depth, n).config, params["depth"][n])
                              for n in _DEPTH_NETS))
    return dataclasses.replace(models, depth=depth, **nets)


def with_depth_window(models: VideoModels, frames: int) -> VideoModels:
    """The bundle with its depth UNet built for ``frames``-frame clips (the spatio-temporal
    UNet's weights do not depend on the clip length: DepthCrafter runs 110-frame windows
    through a UNet trained on 25)."""
    d = models.depth
    unet = Net(dataclasses.replace(d.unet.config, num_frames=int(frames)), d.unet.params)
    return dataclasses.replace(models, depth=DepthModels(unet, d.vae, d.image_encoder))


class WindowPrograms:
    """The jitted per-window programs of one job on ``mesh`` (see the module docstring).

    Arrays in and out carry one leading row per window (``N = data size`` rows per call);
    videos are in [0, 1] at the model's frame size, disparities in pixels of that frame."""

    def __init__(self, models: VideoModels, mesh, prompt: str, sampling: SamplingConfig,
                 stereo: StereoCrafterZeroConfig, depth: DepthConfig):
        self.models, self.mesh, self.size = models, mesh, sharding.data_size(mesh)
        self.params = jax.device_put(_params(models), sharding.replicated(mesh))
        self.plan = S.video_plan(models, sampling, invertible=True)
        self.events = jax.tree.map(jnp.asarray, build_events(stereo, sampling.plan_steps))
        # Guidance 1 without rescale is exactly the conditional output: skip the other half.
        cond_only = sampling.guidance == 1.0 and sampling.guidance_rescale == 0.0
        m, rows, rep = models, P(sharding.DATA), P()

        def mapped(fn, n_rows, n_rep, out=rows, on=mesh):
            return jax.jit(jax.shard_map(fn, mesh=on, in_specs=(rep,) * n_rep + (rows,) * n_rows,
                                         out_specs=out, check_vma=False))

        def encode(params, video):
            mm = _bundle(m, params)
            z0 = S.encode(mm, video)
            ctx = S.context(mm, prompt, video[:, 0], z0[:, :1], sampling)
            return z0, ctx.cond, ctx.uncond

        def invert(params, plan, z0, cond, uncond):
            ctx = S.Context(cond, uncond, {}, jnp.int32(sampling.fs))
            return S.invert(_bundle(m, params), ctx, z0, plan)

        def stereo_run(params, plan, events, x_T, cond, uncond, d_px, key):
            mm = _bundle(m, params)
            d_lat = resize_disparity(d_px, tuple(x_T.shape[2:4]))   # as pipelines.depth
            ctx = S.with_right_condition(S.Context(cond, uncond, {}, jnp.int32(sampling.fs)),
                                         d_lat, stereo)
            return S.stereo_sample(mm, ctx, x_T, d_lat, plan, key[0], events, cond_only).right

        def decode(params, z):
            return S.decode(_bundle(m, params), z)

        def depth_run(params, video, key):
            return S.model_depth(_bundle(m, params), video, key[0], depth)

        self._encode = mapped(encode, 1, 1, (rows, rows, rows))
        self._invert = mapped(invert, 3, 2)
        self._stereo = mapped(stereo_run, 5, 3)
        self._decode = mapped(decode, 1, 1)
        # The depth program runs on the first device only, one window per call: partitioned
        # over 2 devices its Euler loop compiles to other float rounding (measured: up to
        # 4e-6 on the tiny family's relative disparity), and ``--devices`` must not change
        # the output. The stereo windows, most of the work, scale out.
        self.depth_mesh = sharding.make_mesh(list(mesh.devices.flat)[:1], views=1)
        self.params_depth = jax.device_put(self.params, sharding.replicated(self.depth_mesh))
        self._depth = (mapped(depth_run, 2, 1, on=self.depth_mesh) if models.depth is not None
                       else None)

    def _rows(self, x, mesh=None):
        mesh = self.mesh if mesh is None else mesh
        x = np.asarray(x)
        sharding.check_batch(x.shape[0], mesh, "windows")
        return jax.device_put(x, sharding.batch_sharding(mesh))

    def stereo(self, video01, disparity_px, keys, timer):
        """``video01`` [N, T, H, W, 3], ``disparity_px`` [N, T, H, W], ``keys`` [N, 2] ->
        the decoded right views [N, T, H, W, 3] (numpy). ``timer``: a ``StageTimer``."""
        video, d, k = self._rows(video01), self._rows(disparity_px), self._rows(keys)
        z0, cond, uncond = timer.run("encode", self._encode, self.params, video)
        x_T = timer.run("invert", self._invert, self.params, self.plan, z0, cond, uncond)
        z = timer.run("stereo", self._stereo, self.params, self.plan, self.events, x_T, cond,
                      uncond, d, k)
        return np.asarray(timer.run("decode", self._decode, self.params, z))

    def depth(self, video01, key, timer):
        """One depth window: ``video01`` [1, T, H, W, 3], ``key`` [1, 2] -> the depth model's
        relative disparity [1, T, H, W] (numpy; near = large)."""
        if self._depth is None:
            raise ValueError("depth: the models have no depth network; pass --depth")
        m = self.depth_mesh
        return np.asarray(timer.run("depth", self._depth, self.params_depth,
                                    self._rows(video01, m), self._rows(key, m)))
