"""Null-text inversion (Mokady et al. 2023), StereoDiffusion's image-to-stereo path (Sec. 3.4,
Eq. 9-10): a DDIM inversion at guidance 1 gives the pivot trajectory; then, step by step,
Adam tunes the unconditional embedding so the guided step lands on the pivot.

Released settings (lez-s/StereoDiffusion img2stereo.py, after the null-text inversion code):
10 inner Adam steps per timestep, learning rate ``1e-2 * (1 - i / 100)``, early stop when the
loss falls below ``1e-5 + i * 2e-5`` (checked after the step, as released), each step's
optimisation starting from the previous step's embedding with a fresh Adam state.
The inner loop is a ``lax.while_loop``, the outer one a ``lax.scan``.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from szero_jax.diffusion import DDIMPlan, ddim_invert, ddim_step, plan_at
from szero_jax.diffusion.guidance import check_prediction_type, guidance

# model_fn(x, t, context) -> raw model output (no guidance), as diffusion.cfg_denoiser takes.
ModelFn = Callable[[jax.Array, jax.Array, object], jax.Array]


@dataclasses.dataclass(frozen=True)
class NullTextConfig:
    inner_steps: int = 10          # released num_inner_steps
    learning_rate: float = 1e-2    # released Adam lr 1e-2 * (1 - i / 100)
    lr_decay: float = 1e-2         # the "/ 100" above, per outer step i
    early_stop: float = 1e-5       # released epsilon
    early_stop_slope: float = 2e-5  # released threshold epsilon + i * 2e-5
    prompt: str = ""               # the prompt the photo is inverted with (released: "")

    def validate(self):
        if self.inner_steps < 1:
            raise ValueError(f"inner_steps must be >= 1, got {self.inner_steps}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")


class NullTextResult(NamedTuple):
    x_T: jax.Array            # inverted start latent (the pivot's first entry)
    uncond: object            # per-step unconditional contexts, leading axis S
    inner_steps: jax.Array    # int32 [S]: Adam steps taken at each timestep
    pivot: jax.Array          # [S, ...]: DDIM-inversion latents (input of each sampling step)


def _t(p, x):
    return jnp.broadcast_to(p.timesteps, (x.shape[0],))


def ddim_inversion(model_fn: ModelFn, x_0, plan: DDIMPlan, cond, prediction_type: str = "epsilon"):
    """Plain DDIM inversion with the conditional model (guidance 1, Eq. 9): [S, ...] latents,
    entry i the input of sampling step i (entry 0 is x_T)."""
    return ddim_invert(lambda x, t, p: model_fn(x, t, cond), x_0, plan, prediction_type)


def null_text_inversion(model_fn: ModelFn, x_0, plan: DDIMPlan, cond, uncond,
                        config: NullTextConfig = NullTextConfig(),
                        prediction_type: str = "epsilon") -> NullTextResult:
    """Invert ``x_0`` so that sampling ``plan`` (guidance ``plan.guidance_scale``) with the
    returned per-step unconditional contexts reconstructs it (Eq. 10).

    cond / uncond: contexts (pytrees) for ``model_fn``; ``uncond`` is the starting point of
    the optimisation (the empty prompt's embedding)."""
    check_prediction_type(prediction_type)
    config.validate()
    pivot = ddim_inversion(model_fn, x_0, plan, cond, prediction_type)
    targets = jnp.concatenate([pivot[1:], x_0[None]], axis=0)
    adam = optax.scale_by_adam()      # torch Adam defaults: betas (0.9, 0.999), eps 1e-8

    def outer(carry, inputs):
        x, u = carry
        i, target = inputs
        p = plan_at(plan, i)
        t = _t(p, x)
        out_c = jax.lax.stop_gradient(model_fn(x, t, cond))
        lr = config.learning_rate * (1.0 - i * config.lr_decay)
        threshold = config.early_stop + i * config.early_stop_slope

        def step_with(u_):
            out_u = model_fn(x, t, u_)
            g = guidance(out_c, out_u, p.guidance_scale, p.guidance_rescale)
            return ddim_step(p, x, g, None, prediction_type)[0]

        def loss_fn(u_):
            return jnp.mean((step_with(u_) - target) ** 2)

        def inner_cond(state):
            j, _, _, done = state
            return (j < config.inner_steps) & ~done

        def inner_body(state):
            j, u_, opt, _ = state
            loss, grad = jax.value_and_grad(loss_fn)(u_)
            upd, opt = adam.update(grad, opt, u_)
            u_ = jax.tree.map(lambda a, d: a - lr * d, u_, upd)
            return j + 1, u_, opt, loss < threshold

        j, u, _, _ = jax.lax.while_loop(inner_cond, inner_body,
                                        (jnp.int32(0), u, adam.init(u), jnp.bool_(False)))
        x = jax.lax.stop_gradient(step_with(u))
        return (x, u), (u, j)

    steps = jnp.arange(plan.num_steps, dtype=jnp.int32)
    _, (uncond_steps, taken) = jax.lax.scan(outer, (pivot[0], uncond), (steps, targets))
    return NullTextResult(pivot[0], uncond_steps, taken, pivot)
