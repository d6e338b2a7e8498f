"""The tiny model family: the real architectures at toy sizes, trained on the procedural world
by ``experiments/train_tiny.py`` and shipped in ``szero_jax/assets/tiny/<name>/``.

Networks (name -> family, config):
    vae            "vae"                AutoencoderKL, 4x downsampling (64x64 -> 16x16x4)
    text_encoder   "clip_text"          CLIP text tower over WordTokenizer(world.VOCABULARY)
    image_encoder  "clip_vision"        CLIP ViT, 32x32 input, patch 4
    resampler      "resampler"          DynamiCrafter image projector, 16 tokens per frame
    video_unet     "dynamicrafter_unet" DynamiCrafter UNet (DynamiCrafterConfig: UNet + schedule)
    depth_unet     "depthcrafter_unet"  DepthCrafter / SVD spatio-temporal UNet
    sd_unet        "sd15_unet"          Stable Diffusion 1.5 UNet2DCondition (StereoDiffusion);
                                        with ``vae`` and ``text_encoder`` it is the tiny SD
    sd_depth_unet  "sd2_depth_unet"     the same with SD 2 depth's fifth input channel

The configs below are the ones training starts from; the saved ``config.json`` is the truth
(the VAE's ``scaling_factor`` is measured on the training latents, as SD's 0.18215 was).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from szero_jax import checkpoints
from szero_jax.models.configs import (CLIPTextConfig, CLIPVisionConfig, DynamiCrafterConfig,
                                      DynamiCrafterUNetConfig, ResamplerConfig, UNet2DConfig,
                                      UNetSTConfig, VAEConfig)
from szero_jax.models.tokenizer import WordTokenizer
from szero_jax.world import VOCABULARY

# Training resolution: DynamiCrafter 512's 320x512 aspect at 1/4 scale, so that the latent
# warp moves by whole latent pixels (0.08 x 32 = 2.6 at most; the real model: 0.08 x 64 = 5).
HEIGHT, WIDTH = 80, 128
FRAMES = 8  # clip length of the video and depth models (DynamiCrafter / DepthCrafter: 16 / 25)
CLIP_IMAGE_SIZE = 32  # tiny ViT input (ViT-H/14: 224)
WIDTH_EMBED = 64  # text/vision width = UNet context width (real: 1024)

FAMILIES = {"vae": "vae", "text_encoder": "clip_text", "image_encoder": "clip_vision",
            "resampler": "resampler", "video_unet": "dynamicrafter_unet",
            "depth_unet": "depthcrafter_unet", "sd_unet": "sd15_unet",
            "sd_depth_unet": "sd2_depth_unet"}


def tokenizer() -> WordTokenizer:
    return WordTokenizer(VOCABULARY)


# 4x instead of the real 8x: at this size an 8x VAE leaves 10x16 latents, too coarse for the
# latent warping of StereoCrafter-Zero (the largest disparity would be ~1 latent pixel).
VAE = VAEConfig(block_out_channels=(16, 32, 64), layers_per_block=1, latent_channels=4,
                norm_num_groups=8, scaling_factor=1.0)  # replaced by 1 / std of the training latents

TEXT = CLIPTextConfig(vocab_size=len(VOCABULARY) + 4, width=WIDTH_EMBED, layers=3, heads=4,
                      mlp_dim=4 * WIDTH_EMBED, projection_dim=WIDTH_EMBED)
VISION = CLIPVisionConfig(image_size=CLIP_IMAGE_SIZE, patch_size=4, width=WIDTH_EMBED, layers=2,
                          heads=4, mlp_dim=4 * WIDTH_EMBED, projection_dim=WIDTH_EMBED)

RESAMPLER = ResamplerConfig(dim=WIDTH_EMBED, depth=2, dim_head=16, heads=4, num_queries=16,
                            embedding_dim=WIDTH_EMBED, output_dim=WIDTH_EMBED, ff_mult=4,
                            video_length=FRAMES)

VIDEO_UNET = DynamiCrafterUNetConfig(
    # Widths are multiples of 32: lvdm's GroupNorm32. Attention (spatial + temporal) only at
    # the 8x8 level and the middle; the real model skips its coarsest level instead.
    in_channels=8, out_channels=4, model_channels=32, attention_resolutions=(2,),
    num_res_blocks=1, channel_mult=(1, 2), num_head_channels=16, context_dim=WIDTH_EMBED,
    temporal_length=FRAMES, init_attn_heads=2, default_fs=1)  # fs = frame stride in the world

# v-prediction, zero-terminal-SNR lvdm "linear" 0.00085-0.012: the 512 model's settings
# (DynamiCrafterConfig defaults, inference_512_v1.0.yaml); no dynamic rescale for the tiny one.
VIDEO = DynamiCrafterConfig(unet=VIDEO_UNET, resampler=RESAMPLER,
                            latent_size=(HEIGHT // 4, WIDTH // 4), scale_factor=1.0,
                            use_dynamic_rescale=False,
                            # Undertrained tiny model: CFG 7.5 over-saturates and darkens its
                            # samples; 1.0 keeps them close to the world (MODEL_CARD.md).
                            guidance=1.0,
                            # The released default moves up to 0.08 x 64 = 5 latent pixels at
                            # 512; our latent is 32 wide, so twice the fraction gives the same
                            # latent shift (at 0.08 most disparities round to 0 latent pixels).
                            max_disparity=0.16)

# Widths: multiples of 32 (diffusers' GroupNorm(32)); like the real one, no attention at the
# coarsest level except the middle block.
DEPTH_UNET = UNetSTConfig(in_channels=8, out_channels=4, block_out_channels=(32, 64),
                          layers_per_block=1, heads=(1, 2), cross_attention_dim=WIDTH_EMBED,
                          cross_attn=(True, False), addition_time_embed_dim=32,
                          num_frames=FRAMES)

# Tiny SD 1.5 (eps prediction, scaled-linear betas: UNet2DConfig's sd-v1-5 defaults and
# diffusion.stable_diffusion_schedule) on the family's VAE latent (20x32 at 80x128) and the
# family's text encoder (its final-layer tokens, SD 1.x's last_hidden_state). Two levels;
# like SD's CrossAttnDownBlock2D, but with cross-attention only at the 10x16 level and the
# middle block (the 640-token level's attention would dominate the CPU training cost).
SD_UNET = UNet2DConfig(in_channels=4, out_channels=4, block_out_channels=(32, 64),
                       layers_per_block=1, heads=(2, 4), cross_attention_dim=WIDTH_EMBED,
                       cross_attn=(False, True), sample_size=HEIGHT // 4)
# Tiny SD 2 depth: the tiny SD's UNet with a fifth input channel, the depth condition
# (pipelines.image.sd_depth_condition), like sd-2-depth's unet/config.json (in_channels 5,
# epsilon), fine-tuned from sd_unet as sd-2-depth was from sd-2-base (its model card).
SD_DEPTH_UNET = dataclasses.replace(SD_UNET, in_channels=5)
# Sampling defaults of the tiny SD (generate_image without --checkpoint). max_disparity: as
# the video family's (StereoDiffusion's 0.08 is up to 5 latent pixels on SD's 64-wide latent
# at 512; ours is 32 wide); at 0.08 the latent shift rounds most disparities to 0 or 4 px.
SD_MAX_DISPARITY = VIDEO.max_disparity
SD_GUIDANCE = 3.0  # undertrained tiny model; MODEL_CARD.md "Tiny Stable Diffusion"
# StereoCrafter-Zero overrides of the paper preset for `make demo` on this family (ours, chosen
# by experiments/sweep_demo.py on the demo's seed and 5 more held-out seeds; MODEL_CARD.md
# "The demo"): the holes' first fill and the right view's condition stretched from the
# background side, and the warp kept down to the last step (the paper stops at t = 15).
DEMO_STEREO = {"first_round_fill": "background", "right_condition": "warped_background",
               "warp_stop_t": 0}


def load_tiny_family(names=tuple(FAMILIES), root=None) -> dict[str, tuple[Any, Any]]:
    """``{name: (params, config)}`` of the shipped tiny networks (FileNotFoundError if absent);
    ``root`` defaults to ``checkpoints.TINY_DIR``."""
    root = checkpoints.TINY_DIR if root is None else Path(root)
    out = {}
    for name in names:
        if name not in FAMILIES:
            raise ValueError(f"names: unknown tiny network {name!r}; expected one of {sorted(FAMILIES)}")
        out[name] = checkpoints.load_params(root / name, FAMILIES[name])
    return out
