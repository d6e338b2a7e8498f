"""The source-resolution composite of a right view: the input warped, diffusion in the holes.

A latent diffusion method regenerates every pixel of both views through the VAE (the tiny
family's round trip alone costs ~16 dB), while a forward warp of the input is exact wherever
the left camera saw the point. The composite keeps the warp there and takes the method's
own right view only in the disocclusions:

    right = warp(left, d) * (1 - alpha) + fill * alpha

with ``alpha`` 1 on the holes grown by ``dilate`` px (the warp's edge pixels are often
mixed colours) and falling linearly to 0 over ``feather`` more px (no visible seam); farther
than ``dilate + feather`` px (Euclidean) from every hole, ``alpha`` is exactly 0 and the
right view *is* the warp. ``fill`` is the method's right view at the same size (the footage
converter upsamples the model's).

For the benchmark and the image pipeline, on any [..., H, W] layout:

    out = composite_right(left, disparity_px, diffusion_right)   # Composite(right, holes, alpha)
"""
from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from szero_jax.geometry import forward_warp
from szero_jax.pipelines.config import check_int


@dataclasses.dataclass(frozen=True)
class CompositeConfig:
    dilate: int = 2     # px the holes grow before blending (project choice: the warp's
                        # edge pixels mix foreground and background)
    feather: int = 2    # px of the linear ramp from the fill to the warp (project choice)

    def validate(self) -> "CompositeConfig":
        check_int("CompositeConfig", "dilate", self.dilate, 0, 64)
        check_int("CompositeConfig", "feather", self.feather, 0, 64)
        return self

    @property
    def reach(self) -> int:
        """Pixels farther than this from every hole keep the warp exactly."""
        return self.dilate + self.feather


class Composite(NamedTuple):
    right: jax.Array    # [..., H, W, C] the composite right view
    holes: jax.Array    # [..., H, W] bool: the warp's holes (no left pixel lands there)
    alpha: jax.Array    # [..., H, W] the fill's weight (0 farther than ``reach`` from holes)


def _offsets(radius: int):
    """(dy, dx, distance) of every offset within Euclidean ``radius``."""
    r = int(radius)
    out = [(dy, dx, float(np.hypot(dy, dx))) for dy in range(-r, r + 1) for dx in range(-r, r + 1)
           if np.hypot(dy, dx) <= r]
    return tuple(out)


@functools.partial(jax.jit, static_argnames=("dilate", "feather"))
def hole_alpha(holes, dilate: int = 2, feather: int = 2):
    """The fill's weight from a hole mask [..., H, W]: 1 within Euclidean distance
    ``dilate`` of a hole, ``(dilate + feather - dist) / feather`` up to ``dilate + feather``,
    0 beyond (exactly). The distance is searched over the offsets of that disc only, so the
    cost is ~(2 r + 1)^2 mask shifts, with no full distance transform."""
    holes = jnp.asarray(holes, bool)
    reach = dilate + feather
    h, w = holes.shape[-2:]
    pad = [(0, 0)] * (holes.ndim - 2) + [(reach, reach), (reach, reach)]
    padded = jnp.pad(holes, pad)
    dist = jnp.full(holes.shape, jnp.inf, jnp.float32)
    for dy, dx, r in _offsets(reach):
        shifted = padded[..., reach + dy:reach + dy + h, reach + dx:reach + dx + w]
        dist = jnp.where(shifted, jnp.minimum(dist, r), dist)
    if feather == 0:
        return (dist <= dilate).astype(jnp.float32)
    return jnp.clip((reach - dist) / feather, 0.0, 1.0)


@functools.partial(jax.jit, static_argnames=("dilate", "feather"))
def _composite(left, disparity, fill, dilate, feather):
    warped, holes = forward_warp(left.reshape((-1,) + left.shape[-3:]),
                                 disparity.reshape((-1,) + disparity.shape[-2:]))
    warped, holes = warped.reshape(left.shape), holes.reshape(disparity.shape)
    alpha = hole_alpha(holes, dilate, feather)
    a = alpha[..., None]
    right = warped * (1.0 - a) + jnp.asarray(fill, warped.dtype) * a
    return Composite(right, holes, alpha)


def composite_right(left, disparity, fill, config: CompositeConfig = CompositeConfig()
                    ) -> Composite:
    """The composite right view of ``left`` [..., H, W, C] (float in [0, 1]) under the
    pixel ``disparity`` [..., H, W] (``x_right = x_left - d``), with the method's right view
    ``fill`` [..., H, W, C] in the holes (see the module docstring). jit-compiled per shape.
    """
    left, disparity, fill = (jnp.asarray(left, jnp.float32), jnp.asarray(disparity, jnp.float32),
                             jnp.asarray(fill, jnp.float32))
    if left.ndim < 3 or fill.shape != left.shape or disparity.shape != left.shape[:-1]:
        raise ValueError(f"left / fill [..., H, W, C] and disparity [..., H, W] expected, got "
                         f"{left.shape}, {fill.shape} and {disparity.shape}")
    config = config.validate()
    return _composite(left, disparity, fill, config.dilate, config.feather)
