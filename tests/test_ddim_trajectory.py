"""The whole DynamiCrafter sampling loop: the Flax tiny UNet under szero_jax.diffusion's DDIM
scan reproduces the original lvdm DDIMSampler trajectory step by step (v-prediction,
zero-terminal-SNR, dynamic rescale, CFG 7.5 with guidance rescale 0.7, uniform_trailing,
10 steps, eta 1 with the recorded noise, hybrid conditioning, fs 10)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load_file

from convert.common import convert_to_tree
from convert.keymaps_dynamicrafter import lvdm_keymap
from szero_jax import diffusion
from szero_jax.models.configs import DynamiCrafterUNetConfig
from szero_jax.models.unet3d import UNet3D


def _channels_last(a):  # [..., C, T, H, W] -> [..., T, H, W, C]
    return jnp.asarray(np.moveaxis(a, -4, -1))


def test_tiny_trajectory_matches_lvdm(fixtures_dir):
    d = fixtures_dir / "dynamicrafter"
    tr = np.load(d / "ddim_tiny_trajectory.npz")
    cfg = DynamiCrafterUNetConfig.from_torch_kwargs(json.loads((d / "unet_tiny_config.json").read_text()))
    model = UNet3D(cfg)
    x_T, image = _channels_last(tr["x_T"]), _channels_last(tr["image_latent"])
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.concatenate([x_T, image], -1),
                            jnp.zeros(1), tr["context"], tr["fs"])
    params = {"params": convert_to_tree(load_file(str(d / "unet_tiny.safetensors")).items(),
                                        lvdm_keymap, shapes)}
    plan = diffusion.make_ddim_plan(
        diffusion.dynamicrafter_schedule(), 10, "uniform_trailing", eta=1.0,
        guidance=diffusion.GuidanceScales(7.5, 0.7),
        dynamic_rescale=diffusion.DynamicRescale(base_scale=0.7, turning_step=400))
    np.testing.assert_array_equal(np.asarray(plan.timesteps), tr["ddim_timesteps"][::-1])
    fs = jnp.asarray(tr["fs"])

    def model_fn(x, t, cond):  # hybrid conditioning: image latent on channels + context
        context, concat = cond
        return model.apply(params, jnp.concatenate([x, concat], -1), t, context,
                           jnp.broadcast_to(fs, t.shape))

    denoise = diffusion.cfg_denoiser(model_fn, (jnp.asarray(tr["context"]), image),
                                     (jnp.asarray(tr["uncond_context"]), image))
    run = jax.jit(lambda x, p, n: diffusion.ddim_sample(denoise, x, p, n, "v_prediction",
                                                        return_trajectory=True))
    xs, x0s = run(x_T, plan, _channels_last(tr["noise"]))
    ref_x, ref_x0 = _channels_last(tr["x_inter"][1:]), _channels_last(tr["pred_x0"][1:])
    for i in range(10):
        assert float(jnp.abs(xs[i] - ref_x[i]).max()) <= 1e-4 * float(jnp.abs(ref_x[i]).max()), i
        assert float(jnp.abs(x0s[i] - ref_x0[i]).max()) <= 1e-4 * float(jnp.abs(ref_x0[i]).max()), i
    samples = _channels_last(tr["samples"])
    assert float(jnp.abs(xs[-1] - samples).max()) <= 1e-4 * float(jnp.abs(samples).max())
