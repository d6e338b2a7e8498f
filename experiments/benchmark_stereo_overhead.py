"""Overhead of the StereoCrafter-Zero sampler over its network calls.

    python -m experiments.benchmark_stereo_overhead [--repeats 3] [--steps 50] [--width 128]

The sampler makes E batched calls on [left; right] (``num_evaluations``); everything else
(warps, masks, restart mixing, the scan's control) is overhead. This times the jitted sampler
and one jitted batched call of the same denoiser (median of ``--repeats``, after
compilation) and prints ``sampler / (E x call)``; the target is below 1.10.

The denoiser is moderately sized on purpose (a few 3x3 convolutions of ``--width`` channels
plus a cross-view self-attention over all tokens on a [1, 4, 16, 16, 4] latent): with a toy
network the fixed per-event cost would dominate, with a real UNet it vanishes.
"""
from __future__ import annotations

import statistics
import time

from absl import app, flags

from experiments import common_flags as cf

cf.declare(__name__, "repeats", "steps")
flags.DEFINE_integer("channels", 128, "channels of the denoiser's convolutions")
FLAGS = flags.FLAGS


def _denoiser(width, channels):
    import jax
    import jax.numpy as jnp
    from szero_jax.models.attention import cross_view_attention

    def init(key):
        ks = jax.random.split(key, 8)
        conv = lambda k, i, o: jax.random.normal(k, (3, 3, i, o)) / jnp.sqrt(9.0 * i)
        return {"c0": conv(ks[0], channels, width), "c1": conv(ks[1], width, width),
                "c2": conv(ks[2], width, width), "c3": conv(ks[3], width, channels),
                "q": jax.random.normal(ks[4], (width, width)) / jnp.sqrt(width),
                "k": jax.random.normal(ks[5], (width, width)) / jnp.sqrt(width),
                "v": jax.random.normal(ks[6], (width, width)) / jnp.sqrt(width)}

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def apply(params, x, t, plan_i, cross_view):
        b, f, h, w, c = x.shape
        y = x.reshape(b * f, h, w, c)
        y = jax.nn.silu(conv(y, params["c0"]))
        y = jax.nn.silu(conv(y, params["c1"]))
        tok = y.reshape(b, f * h * w, width)
        att = cross_view_attention(tok @ params["q"], tok @ params["k"], tok @ params["v"], 4,
                                   cross_view)
        y = y + att.reshape(y.shape)
        y = jax.nn.silu(conv(y, params["c2"]))
        return x + 0.1 * conv(y, params["c3"]).reshape(x.shape)

    return init, apply


def _median_time(fn, repeats):
    import jax
    jax.block_until_ready(fn())        # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(_):
    import functools

    import jax
    import jax.numpy as jnp
    from szero_jax.diffusion import dynamicrafter_schedule, make_ddim_plan, plan_at
    from szero_jax.models.attention import cross_view_index
    from szero_jax.stereo import (StereoCrafterZeroConfig, build_events, num_evaluations,
                                  stereocrafter_zero_run)

    shape = (1, 4, 16, 16, 4)
    init, apply = _denoiser(FLAGS.channels, shape[-1])
    params = init(jax.random.PRNGKey(0))
    plan = make_ddim_plan(dynamicrafter_schedule(), FLAGS.steps, "uniform_trailing", eta=1.0)
    x_T = jax.random.normal(jax.random.PRNGKey(1), shape)
    d = jnp.full(shape[:-1], 2.0).at[:, :, 4:12, 5:11].set(4.0)
    config = StereoCrafterZeroConfig()
    events = build_events(config, FLAGS.steps)
    n_calls = num_evaluations(config, FLAGS.steps)

    @jax.jit
    def sample(params, x_T, d, key, events):
        return stereocrafter_zero_run(functools.partial(apply, params), x_T, d, plan, key,
                                      events, "v_prediction")

    @jax.jit
    def one_call(params, x):
        p = plan_at(plan, 0)
        return apply(params, x, jnp.broadcast_to(p.timesteps, (x.shape[0],)), p,
                     jnp.int32(cross_view_index("uni_query")))

    x2 = jnp.concatenate([x_T, x_T])
    t_call = _median_time(lambda: one_call(params, x2), FLAGS.repeats * 5)
    t_sample = _median_time(lambda: sample(params, x_T, d, jax.random.PRNGKey(2), events),
                            FLAGS.repeats)
    ratio = t_sample / (n_calls * t_call)
    print(f"network calls (batched L+R): {n_calls}")
    print(f"one call: {t_call * 1e3:.2f} ms   sampler: {t_sample:.3f} s   "
          f"calls x call: {n_calls * t_call:.3f} s")
    print(f"sampler / (calls x call) = {ratio:.3f}   overhead {100 * (ratio - 1):+.1f}%")


if __name__ == "__main__":
    app.run(main)
