"""Tiny random model bundles for the pipeline tests (configs far below the tiny family)."""
import functools

import jax

from szero_jax.models.configs import (CLIPTextConfig, CLIPVisionConfig, DynamiCrafterConfig,
                                      DynamiCrafterUNetConfig, ResamplerConfig, UNet2DConfig,
                                      UNetSTConfig, VAEConfig)
from szero_jax.pipelines import random_sd_models, random_video_models
from szero_jax.world import VOCABULARY

FRAMES = 2
SIZE = 32            # image side; latent 8 (4x VAE)
D = 32               # context width

VAE = VAEConfig(block_out_channels=(16, 16, 16), layers_per_block=1, norm_num_groups=8,
                scaling_factor=1.0)
TEXT = CLIPTextConfig(vocab_size=len(VOCABULARY) + 4, width=D, layers=1, heads=2, mlp_dim=2 * D,
                      projection_dim=D)
VISION = CLIPVisionConfig(image_size=16, patch_size=8, width=D, layers=1, heads=2,
                          mlp_dim=2 * D, projection_dim=D)
RESAMPLER = ResamplerConfig(dim=D, depth=1, dim_head=16, heads=2, num_queries=4,
                            embedding_dim=D, output_dim=D, ff_mult=2, video_length=FRAMES)
UNET = DynamiCrafterUNetConfig(in_channels=8, out_channels=4, model_channels=32,
                               attention_resolutions=(2,), num_res_blocks=1, channel_mult=(1, 1),
                               num_head_channels=16, context_dim=D, temporal_length=FRAMES,
                               init_attn_heads=2, image_tokens_per_frame=4, default_fs=1)
VIDEO = DynamiCrafterConfig(unet=UNET, resampler=RESAMPLER, latent_size=(8, 8), scale_factor=1.0,
                            use_dynamic_rescale=False)
DEPTH = UNetSTConfig(in_channels=8, out_channels=4, block_out_channels=(32, 32), layers_per_block=1,
                     heads=(2, 2), cross_attention_dim=D, cross_attn=(True, False),
                     addition_time_embed_dim=8, num_frames=FRAMES)
SD_UNET = UNet2DConfig(in_channels=4, block_out_channels=(32, 32), layers_per_block=1, heads=(2, 2),
                       cross_attention_dim=D, cross_attn=(True, False))
SD_TEXT = CLIPTextConfig(vocab_size=len(VOCABULARY) + 4, width=D, layers=1, heads=2, mlp_dim=2 * D,
                         projection_dim=None)


@functools.lru_cache(maxsize=None)
def video_models(depth=True):
    return random_video_models(jax.random.PRNGKey(0), VIDEO, VAE, TEXT, VISION,
                               DEPTH if depth else None)


@functools.lru_cache(maxsize=None)
def sd_models(in_channels=4):
    import dataclasses
    unet = dataclasses.replace(SD_UNET, in_channels=in_channels)
    return random_sd_models(jax.random.PRNGKey(1), unet, VAE, SD_TEXT)


def save_video_bundle(models, root):
    """Write a bundle in the tiny-family layout (one checkpoint per network)."""
    from szero_jax import checkpoints
    from szero_jax.tiny import FAMILIES
    nets = {"vae": models.vae, "text_encoder": models.text_encoder,
            "image_encoder": models.image_encoder, "resampler": models.resampler}
    for name, net in nets.items():
        checkpoints.save_params(root / name, net.params, net.config, FAMILIES[name])
    checkpoints.save_params(root / "video_unet", models.unet.params, models.config,
                            FAMILIES["video_unet"])
    if models.depth is not None:
        checkpoints.save_params(root / "depth_unet", models.depth.unet.params,
                                models.depth.unet.config, FAMILIES["depth_unet"])
    return root
