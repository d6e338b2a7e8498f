"""Tiny denoisers for the stereo sampler tests: a random channel mix, a spatial term that
depends on the timestep, and a real cross-view self-attention over all tokens."""
import jax
import jax.numpy as jnp

from szero_jax.diffusion import make_ddim_plan, stable_diffusion_schedule
from szero_jax.models.attention import cross_view_attention, multihead_attention


def toy_params(key, channels=4):
    ks = jax.random.split(key, 4)
    w = lambda k: jax.random.normal(k, (channels, channels)) / jnp.sqrt(channels)
    return {"mix": w(ks[0]), "q": w(ks[1]), "k": w(ks[2]), "v": w(ks[3])}


def toy_denoiser(params, x, t, plan_i=None, cross_view=None):
    """eps-like output; ``cross_view`` None runs plain self-attention (any batch)."""
    c = x.shape[-1]
    tok = x.reshape(x.shape[0], -1, c)
    q, k, v = tok @ params["q"], tok @ params["k"], tok @ params["v"]
    if cross_view is None:
        att = multihead_attention(q, k, v, 1)
    else:
        att = cross_view_attention(q, k, v, 1, cross_view)
    tt = (t.astype(jnp.float32) / 1000.0).reshape((-1,) + (1,) * (x.ndim - 1))
    # ~x plus bounded terms, so eps-DDIM stays in range over the whole schedule
    return (x + 0.3 * jnp.tanh(x @ params["mix"]) + 0.3 * jnp.tanh(att.reshape(x.shape))
            + 0.1 * (1 + tt) * jnp.tanh(jnp.roll(x, 1, axis=-2)))


def toy_plan(steps=10, eta=0.0):
    return make_ddim_plan(stable_diffusion_schedule(), steps, "trailing", eta=eta)


def toy_disparity(shape):
    """[B, T, H, W]: background 1 px, a block 3 px (occlusion edges and a border strip)."""
    b, t, h, w = shape
    d = jnp.ones(shape)
    return d.at[:, :, 1:h - 1, w // 3: 2 * w // 3].set(3.0)


def count_eqns(jaxpr):
    """Equations of a jaxpr including every sub-jaxpr (scan, cond, switch bodies)."""
    n = 0
    for eqn in jaxpr.eqns:
        n += 1
        for v in eqn.params.values():
            for sub in (v if isinstance(v, (list, tuple)) else [v]):
                inner = getattr(sub, "jaxpr", None)
                if inner is not None and hasattr(inner, "eqns"):
                    n += count_eqns(inner)
                elif hasattr(sub, "eqns"):
                    n += count_eqns(sub)
    return n
