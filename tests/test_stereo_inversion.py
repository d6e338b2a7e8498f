import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from szero_jax.diffusion import (GuidanceScales, ddim_sample, make_ddim_plan,
                                 stable_diffusion_schedule)
from szero_jax.models.attention import cross_view_index, multihead_attention
from szero_jax.stereo.denoisers import stereo_cfg_denoiser
from szero_jax.stereo.inversion import NullTextConfig, ddim_inversion, null_text_inversion

C, D, TOKENS = 4, 8, 3


def _params(key):
    ks = jax.random.split(key, 5)
    return {"mix": jax.random.normal(ks[0], (C, C)) / 2, "q": jax.random.normal(ks[1], (C, D)),
            "k": jax.random.normal(ks[2], (D, D)) / 3, "v": jax.random.normal(ks[3], (D, D)) / 3,
            "o": jax.random.normal(ks[4], (D, C)) / 3}


def _model(params, x, t, ctx, cross_view=None):
    """Toy eps model with a cross-attention to the text context (so guidance matters)."""
    tok = x.reshape(x.shape[0], -1, C)
    att = multihead_attention(tok @ params["q"], ctx @ params["k"], ctx @ params["v"], 1)
    att = att @ params["o"]
    tt = (t.astype(jnp.float32) / 1000.0).reshape((-1,) + (1,) * (x.ndim - 1))
    return x + 0.3 * jnp.tanh(x @ params["mix"]) + (0.5 + tt) * jnp.tanh(att.reshape(x.shape))


def _psnr(a, b):
    rng = float(b.max() - b.min())
    return float(10 * jnp.log10(rng ** 2 / jnp.mean((a - b) ** 2)))


def test_null_text_beats_ddim_inversion_at_guidance_7_5():
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    params = _params(k[0])
    x0 = jax.random.normal(k[1], (1, 4, 4, C))
    cond = jax.random.normal(k[2], (1, TOKENS, D))
    uncond = jax.random.normal(k[3], (1, TOKENS, D)) * 0.3
    # released: SD 1.4, guidance 7.5 (img2stereo / null-text code); 10 steps keep it fast
    plan = make_ddim_plan(stable_diffusion_schedule(), 10, "leading", steps_offset=1,
                          set_alpha_to_one=False, guidance=GuidanceScales(7.5))
    model = functools.partial(_model, params)

    @jax.jit
    def run(x0, cond, uncond):
        inv = ddim_inversion(model, x0, plan, cond)
        plain, _ = ddim_sample(stereo_cfg_denoiser(model, cond, uncond), inv[0], plan, None,
                               "epsilon")
        nti = null_text_inversion(model, x0, plan, cond, uncond, NullTextConfig())
        rec, _ = ddim_sample(stereo_cfg_denoiser(model, cond, nti.uncond, per_step_uncond=True),
                             nti.x_T, plan, None, "epsilon")
        return plain, rec, nti.inner_steps

    plain, rec, taken = run(x0, cond, uncond)
    p_plain, p_nti = _psnr(plain, x0), _psnr(rec, x0)
    print(f"PSNR plain DDIM inversion {p_plain:.2f} dB, null-text {p_nti:.2f} dB")
    assert p_nti > p_plain + 3.0, (p_plain, p_nti)
    assert int(taken.max()) <= 10 and int(taken.min()) >= 1


def test_stereo_cfg_denoiser_keeps_views_major():
    """[L; R] goes to the network as [L_c, L_u, R_c, R_u]."""
    seen = {}

    def model(x, t, ctx, cross_view):
        seen["x"], seen["ctx"] = x, ctx
        return x * ctx[:, :1, :1].reshape(-1, 1, 1, 1)

    plan = make_ddim_plan(stable_diffusion_schedule(), 4, "leading",
                          guidance=GuidanceScales(2.0))
    from szero_jax.diffusion import plan_at
    x = jnp.stack([jnp.full((2, 2, 1), 1.0), jnp.full((2, 2, 1), 2.0)])
    cond, uncond = jnp.full((1, 1, 1), 3.0), jnp.full((1, 1, 1), 5.0)
    out = stereo_cfg_denoiser(model, cond, uncond)(x, jnp.zeros(2, jnp.int32), plan_at(plan, 0),
                                                   cross_view_index("uni"))
    np.testing.assert_array_equal(seen["x"][:, 0, 0, 0], [1, 1, 2, 2])
    np.testing.assert_array_equal(seen["ctx"][:, 0, 0], [3, 5, 3, 5])
    # guided = u + 2 (c - u) = 2c - u = x * (6 - 5)
    np.testing.assert_allclose(out, x)


def test_null_text_config_validated():
    with pytest.raises(ValueError, match="inner_steps"):
        NullTextConfig(inner_steps=0).validate()
