"""szero_jax.sharding: the stereo samplers on a (data, views) mesh give the same outputs on 1
and 4 (forced CPU) devices. Each check runs this file as a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=4 (the flag must be set before jax starts)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(case: str) -> dict:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, __file__, case], env=env, capture_output=True,
                          text=True, timeout=1500, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _check(res, fields):
    assert res["n_devices"] == 4
    assert res["mesh4"] == {"data": 2, "views": 2} and res["mesh1"] == {"data": 1, "views": 1}
    assert res["devices_used4"] == 4 and res["devices_used1"] == 1
    for f in fields:
        # identical up to float32 reassociation of the partitioned program: <= 1e-6 relative
        assert res[f"{f}_diff"] <= 1e-6 * max(1.0, res[f"{f}_scale"]), (f, res)
        assert res[f"{f}_scale"] > 0.1        # a real output, not zeros


def test_crafter_zero_and_stereodiffusion_same_on_1_and_4_devices_toy_denoiser():
    res = _run("toy")
    _check(res, ("cz_left", "cz_right", "sd_left", "sd_right"))
    assert res["cz_holes_equal"] and res["sd_shifted_equal"]
    assert res["cz_holes_any"]              # the disparity does open holes
    # a batch that does not split over the data axis, and a bad views count, are refused
    assert "do not split over the mesh's 2 data devices" in res["odd_batch"]
    assert "views: expected 1 or 2" in res["bad_views"]
    assert res["bad_inputs"] == "inputs: expected a SamplerInputs, got tuple"


@pytest.mark.slow
def test_crafter_zero_tiny_unet3d_same_on_1_and_4_devices():
    res = _run("unet")
    _check(res, ("cz_left", "cz_right"))
    assert res["cz_holes_equal"]


# ------------------------------------------------------------------------- subprocess side
def _toy_make_denoiser(params, cond, uncond):
    """A stereo CFG denoiser over the toy network of tests/helpers/toy_stereo.py (channel mix +
    real cross-view attention), conditioned by adding a per-prompt vector."""
    from szero_jax.stereo import stereo_cfg_denoiser
    from tests.helpers.toy_stereo import toy_denoiser

    def model_fn(x, t, ctx, cross_view=None):
        shift = ctx["vec"].reshape((x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],))
        return toy_denoiser(params, x + 0.1 * shift, t, None, cross_view)

    return stereo_cfg_denoiser(model_fn, cond, uncond)


_UNET = None


def _unet_make_denoiser(params, cond, uncond):
    import jax.numpy as jnp
    from szero_jax.pipelines.conditioning import video_model_fn
    from szero_jax.stereo import stereo_cfg_denoiser
    return stereo_cfg_denoiser(video_model_fn(_UNET, jnp.float32, params, jnp.int32(1), "stereo"),
                               cond, uncond)


def _compare(res, prefix, outs, fields, mask_field):
    a, b = outs[1], outs[4]
    for f in fields:
        x, y = np.asarray(getattr(a, f)), np.asarray(getattr(b, f))
        res[f"{prefix}_{f}_diff"] = float(np.abs(x - y).max())
        res[f"{prefix}_{f}_scale"] = float(np.abs(x).max())
        res[f"{prefix}_{f}_bitwise"] = bool(np.array_equal(x, y))
    m1, m4 = np.asarray(getattr(a, mask_field)), np.asarray(getattr(b, mask_field))
    res[f"{prefix}_{mask_field}_equal"] = bool(np.array_equal(m1, m4))
    res[f"{prefix}_{mask_field}_any"] = bool(m1.any())


def _main(case):
    import jax
    import jax.numpy as jnp
    from szero_jax import sharding
    from szero_jax.diffusion import make_ddim_plan, stable_diffusion_schedule
    from szero_jax.stereo import (StereoCrafterZeroConfig, StereoDiffusionConfig, build_events,
                                  build_stereodiffusion_events)
    from tests.helpers.toy_stereo import toy_params

    res = {"n_devices": jax.device_count()}
    meshes = {1: sharding.make_mesh(jax.devices()[:1]), 4: sharding.make_mesh()}
    for n, m in meshes.items():
        res[f"mesh{n}"] = {k: int(v) for k, v in m.shape.items()}
    ks = jax.random.split(jax.random.PRNGKey(0), 8)
    b = 2                                   # prompts
    plan = make_ddim_plan(stable_diffusion_schedule(), 6, "trailing", eta=1.0)
    cz_events = build_events(StereoCrafterZeroConfig(restart_steps=2, restart_rounds=2,
                                                     warp_every=2, warp_stop_t=2,
                                                     refine_rounds=1), 6)
    key = jax.random.PRNGKey(7)

    if case == "toy":
        x = jnp.zeros((3, 2, 4, 8, 4))
        try:
            sharding.stereocrafter_zero_sharded(
                meshes[4], _toy_make_denoiser, None, {}, {},
                sharding.SamplerInputs(x, x[..., 0], plan, key, cz_events))
        except ValueError as e:
            res["odd_batch"] = str(e)
        try:                                # a bare tuple instead of SamplerInputs
            sharding.stereocrafter_zero_sharded(meshes[4], _toy_make_denoiser, None, {}, {},
                                                (x, x[..., 0], plan, key, cz_events))
        except ValueError as e:
            res["bad_inputs"] = str(e)
        try:
            sharding.make_mesh(views=3)
        except ValueError as e:
            res["bad_views"] = str(e)

    if case == "toy":
        params = toy_params(ks[0])
        shape, make = (b, 2, 6, 12, 4), _toy_make_denoiser
        cond = {"vec": jax.random.normal(ks[1], (b, 4))}
        uncond = {"vec": jnp.zeros((b, 4))}
    else:                                   # "unet": a tiny random DynamiCrafter UNet3D
        global _UNET  # pylint: disable=global-statement
        from szero_jax.models.configs import DynamiCrafterUNetConfig
        from szero_jax.models.unet3d import UNet3D
        t, s, d = 2, 8, 32
        _UNET = DynamiCrafterUNetConfig(
            in_channels=8, out_channels=4, model_channels=32, attention_resolutions=(2,),
            num_res_blocks=1, channel_mult=(1, 1), num_head_channels=16, context_dim=d,
            temporal_length=t, init_attn_heads=2, image_tokens_per_frame=4, default_fs=1)
        length = _UNET.text_context_len + 4 * t
        params = jax.jit(UNet3D(_UNET).init)(ks[0], jnp.zeros((1, t, s, s, 8)), jnp.zeros((1,)),
                                             jnp.zeros((1, length, d)))["params"]
        shape, make = (b, t, s, s, 4), _unet_make_denoiser
        concat = jax.random.normal(ks[2], (b, t, s, s, 4))
        cond = {"text": jax.random.normal(ks[1], (b, length, d)), "concat": concat}
        uncond = {"text": jax.random.normal(ks[3], (b, length, d)), "concat": concat}
    x_T = jax.random.normal(ks[4], shape)
    h, w = shape[-3], shape[-2]
    disp = jnp.ones(shape[:-1]).at[..., 1:h - 1, w // 3:2 * w // 3].set(2.0).at[1].multiply(0.5)

    cz_inputs = sharding.SamplerInputs(x_T, disp, plan, key, cz_events)
    outs = {n: sharding.stereocrafter_zero_sharded(m, make, params, cond, uncond, cz_inputs)
            for n, m in meshes.items()}
    for n, o in outs.items():
        res[f"devices_used{n}"] = len(o.right.sharding.device_set)
    _compare(res, "cz", outs, ("left", "right"), "holes")

    if case == "toy":                       # StereoDiffusion on images [B, H, W, C]
        sd_events = build_stereodiffusion_events(StereoDiffusionConfig(), 6)
        x_img, d_img = x_T[:, 0], disp[:, 0]
        sd_inputs = sharding.SamplerInputs(x_img, d_img, plan, key, sd_events)
        outs = {n: sharding.stereodiffusion_sharded(m, make, params, cond, uncond, sd_inputs)
                for n, m in meshes.items()}
        _compare(res, "sd", outs, ("left", "right"), "shifted")
    print(json.dumps(res))
    print(json.dumps(res), file=sys.stderr)


if __name__ == "__main__":
    _main(sys.argv[1])
