"""Frozen model configurations and a registry of the full-size ones, by name.

Each network family defines its config dataclass here; full-size configurations are
registered with ``register(name, config)`` and fetched with ``get(name)``. Tiny configs
used by tests and the shipped tiny family are built directly, not registered.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Tuple

REGISTRY: dict[str, Any] = {}


def register(name: str, config: Any) -> Any:
    """Add a full-size configuration under ``name`` (each name once)."""
    if name in REGISTRY:
        raise ValueError(f"config name {name!r} is already registered")
    REGISTRY[name] = config
    return config


def get(name: str) -> Any:
    """The registered configuration called ``name``."""
    if name not in REGISTRY:
        raise ValueError(f"unknown config name {name!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[name]


def _from_kwargs(cls, kwargs: dict, ignored: tuple, fixed: dict):
    """Build ``cls`` from a PyTorch constructor-argument dict (e.g. a yaml ``params`` block)."""
    for key, expected in fixed.items():
        if key in kwargs and kwargs[key] != expected:
            raise ValueError(f"{cls.__name__}: {key}={kwargs[key]!r} is not supported "
                             f"(only {expected!r})")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(kwargs) - names - set(ignored) - set(fixed)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown arguments {sorted(unknown)}")
    out = {}
    for k, v in kwargs.items():
        if k in names:
            out[k] = tuple(v) if isinstance(v, list) else v
    return cls(**out)


# ----------------------------------------------------------------------------- DynamiCrafter
@dataclasses.dataclass(frozen=True)
class DynamiCrafterUNetConfig:
    """lvdm ``openaimodel3d.UNetModel`` arguments (defaults: configs/inference_512_v1.0.yaml)."""

    in_channels: int = 8  # inference_512_v1.0.yaml: 4 noisy + 4 concatenated image latents
    out_channels: int = 4  # inference_512_v1.0.yaml
    model_channels: int = 320  # inference_512_v1.0.yaml
    attention_resolutions: Tuple[int, ...] = (4, 2, 1)  # inference_512_v1.0.yaml
    num_res_blocks: int = 2  # inference_512_v1.0.yaml
    channel_mult: Tuple[int, ...] = (1, 2, 4, 4)  # inference_512_v1.0.yaml
    num_head_channels: int = 64  # inference_512_v1.0.yaml
    transformer_depth: int = 1  # inference_512_v1.0.yaml
    context_dim: int = 1024  # inference_512_v1.0.yaml
    use_linear: bool = True  # inference_512_v1.0.yaml
    temporal_conv: bool = True  # inference_512_v1.0.yaml
    tempspatial_aware: bool = False  # openaimodel3d.UNetModel default
    temporal_attention: bool = True  # inference_512_v1.0.yaml
    temporal_length: int = 16  # inference_512_v1.0.yaml
    addition_attention: bool = True  # inference_512_v1.0.yaml (init_attn)
    init_attn_heads: int = 8  # openaimodel3d.UNetModel: init_attn is built with n_heads=8
    image_cross_attention: bool = True  # inference_512_v1.0.yaml
    image_cross_attention_scale_learnable: bool = False  # inference_512_v1.0.yaml (256: True)
    image_cross_attention_scale: float = 1.0  # lvdm attention.CrossAttention default
    text_context_len: int = 77  # lvdm attention.CrossAttention default
    image_tokens_per_frame: int = 16  # openaimodel3d.UNetModel.forward: "77 + t*16" split
    default_fs: int = 24  # inference_512_v1.0.yaml
    fs_condition: bool = True  # inference_512_v1.0.yaml

    def __post_init__(self):
        if self.num_head_channels <= 0:
            raise ValueError(f"num_head_channels must be positive, got {self.num_head_channels}")
        if not self.channel_mult:
            raise ValueError("channel_mult must not be empty")

    @classmethod
    def from_torch_kwargs(cls, kwargs: dict) -> "DynamiCrafterUNetConfig":
        """From ``UNetModel`` constructor arguments (a yaml ``unet_config.params`` block)."""
        return _from_kwargs(
            cls, kwargs,
            ignored=("dropout", "use_checkpoint", "use_fp16"),
            fixed={"use_relative_position": False, "use_causal_attention": False,
                   "temporal_selfatt_only": True, "dims": 2, "conv_resample": True,
                   "use_scale_shift_norm": False, "resblock_updown": False, "num_heads": -1})


@dataclasses.dataclass(frozen=True)
class ResamplerConfig:
    """lvdm ``encoders.resampler.Resampler`` (defaults: configs/inference_512_v1.0.yaml)."""

    dim: int = 1024  # inference_512_v1.0.yaml image_proj_stage_config
    depth: int = 4  # inference_512_v1.0.yaml
    dim_head: int = 64  # inference_512_v1.0.yaml
    heads: int = 12  # inference_512_v1.0.yaml
    num_queries: int = 16  # inference_512_v1.0.yaml (per frame)
    embedding_dim: int = 1280  # inference_512_v1.0.yaml (OpenCLIP ViT-H-14 width)
    output_dim: int = 1024  # inference_512_v1.0.yaml
    ff_mult: int = 4  # inference_512_v1.0.yaml
    video_length: Optional[int] = 16  # inference_512_v1.0.yaml

    @classmethod
    def from_torch_kwargs(cls, kwargs: dict) -> "ResamplerConfig":
        return _from_kwargs(cls, kwargs, ignored=(), fixed={})


@dataclasses.dataclass(frozen=True)
class DynamiCrafterConfig:
    """A DynamiCrafter release: its networks plus the diffusion wrapper's settings."""

    unet: DynamiCrafterUNetConfig = DynamiCrafterUNetConfig()
    resampler: ResamplerConfig = ResamplerConfig()
    # Registry names of the shared networks (all three releases use the same ones).
    vae: str = "dynamicrafter_vae"  # inference_*_v1.0.yaml first_stage_config
    text_encoder: str = "openclip_vit_h14_text"  # cond_stage_config FrozenOpenCLIPEmbedder
    image_encoder: str = "openclip_vit_h14_vision"  # img_cond_stage_config (ViT-H-14 visual)
    parameterization: str = "v"  # inference_512_v1.0.yaml
    rescale_betas_zero_snr: bool = True  # inference_512_v1.0.yaml
    beta_schedule: str = "linear"  # lvdm ddpm3d.DDPM default
    linear_start: float = 0.00085  # inference_512_v1.0.yaml
    linear_end: float = 0.012  # inference_512_v1.0.yaml
    timesteps: int = 1000  # inference_512_v1.0.yaml
    latent_size: Tuple[int, int] = (40, 64)  # inference_512_v1.0.yaml image_size
    scale_factor: float = 0.18215  # inference_512_v1.0.yaml
    use_dynamic_rescale: bool = True  # inference_512_v1.0.yaml
    base_scale: float = 0.7  # inference_512_v1.0.yaml
    perframe_ae: bool = True  # inference_512_v1.0.yaml
    guidance: float = 7.5  # sampling default: scripts/run.sh unconditional_guidance_scale
    # Stereo default: near-to-far disparity as a fraction of the width, StereoCrafter-Zero
    # stereo_utils.py scale 8 (% of the latent width: up to 5 latent pixels at 512).
    max_disparity: float = 0.08


register("dynamicrafter_256", DynamiCrafterConfig(
    unet=DynamiCrafterUNetConfig(
        image_cross_attention_scale_learnable=True,  # inference_256_v1.0.yaml
        default_fs=3),  # inference_256_v1.0.yaml
    parameterization="eps",  # inference_256_v1.0.yaml: key absent, ddpm3d.DDPM default
    rescale_betas_zero_snr=False,  # inference_256_v1.0.yaml: key absent
    latent_size=(32, 32),  # inference_256_v1.0.yaml
    use_dynamic_rescale=False,  # inference_256_v1.0.yaml: key absent
    perframe_ae=False))  # inference_256_v1.0.yaml: key absent
register("dynamicrafter_512", DynamiCrafterConfig())
register("dynamicrafter_1024", DynamiCrafterConfig(
    unet=DynamiCrafterUNetConfig(default_fs=10),  # inference_1024_v1.0.yaml
    latent_size=(72, 128),  # inference_1024_v1.0.yaml
    base_scale=0.3))  # inference_1024_v1.0.yaml


def _check_levels(cfg) -> None:
    """Per-level settings of a diffusers UNet config: one entry per level, heads dividing."""
    n = len(cfg.block_out_channels)
    if len(cfg.heads) != n or len(cfg.cross_attn) != n:
        raise ValueError(f"heads and cross_attn need one entry per level ({n}), got "
                         f"{cfg.heads} and {cfg.cross_attn}")
    if any(c % h for c, h in zip(cfg.block_out_channels, cfg.heads)):
        raise ValueError(f"block_out_channels {cfg.block_out_channels} must divide by "
                         f"heads {cfg.heads}")


# ----------------------------------------------------------------------------- Stable Diffusion
@dataclasses.dataclass(frozen=True)
class UNet2DConfig:
    """diffusers ``UNet2DConditionModel`` (defaults: SD 1.5 ``unet/config.json``)."""

    in_channels: int = 4  # sd-v1-5 unet/config.json
    out_channels: int = 4  # sd-v1-5 unet/config.json
    block_out_channels: Tuple[int, ...] = (320, 640, 1280, 1280)  # sd-v1-5 unet/config.json
    layers_per_block: int = 2  # sd-v1-5 unet/config.json
    # Heads per level: diffusers reads ``attention_head_dim`` as the head count (8 in
    # sd-v1-5 unet/config.json; [5, 10, 20, 20] in SD 2.x).
    heads: Tuple[int, ...] = (8, 8, 8, 8)
    cross_attention_dim: int = 768  # sd-v1-5 unet/config.json
    # CrossAttnDownBlock2D x3 + DownBlock2D (sd-v1-5 unet/config.json down_block_types).
    cross_attn: Tuple[bool, ...] = (True, True, True, False)
    transformer_layers_per_block: int = 1  # UNet2DConditionModel default
    use_linear_projection: bool = False  # sd-v1-5 unet/config.json (1x1 conv proj_in/out)
    norm_eps: float = 1e-5  # sd-v1-5 unet/config.json
    flip_sin_to_cos: bool = True  # sd-v1-5 unet/config.json
    freq_shift: int = 0  # sd-v1-5 unet/config.json
    sample_size: int = 64  # sd-v1-5 unet/config.json
    prediction_type: str = "epsilon"  # sd-v1-5 scheduler/scheduler_config.json
    # Per-channel mean of the scaled training latents, or None (SD: x_T ~ N(0, I)). Given, the
    # text / depth pipelines start at x_T ~ N(sqrt(ab_T) mean, (1 - ab_T) I), the forward
    # process's own marginal: the schedule's terminal SNR is not 0, so the model reads the
    # image's mean from x_T and keeps it (the signal leak; Everaert et al., WACV 2024). Set
    # for the tiny SD, whose latent channel means are up to 4x their spatial std.
    latent_mean: Optional[Tuple[float, ...]] = None

    def __post_init__(self):
        _check_levels(self)
        if self.latent_mean is not None and len(self.latent_mean) != self.out_channels:
            raise ValueError(f"latent_mean: expected {self.out_channels} values (out_channels), "
                             f"got {self.latent_mean}")


_SD2 = dict(heads=(5, 10, 20, 20),  # sd-2-1 unet/config.json attention_head_dim
            cross_attention_dim=1024,  # sd-2-1 unet/config.json (OpenCLIP ViT-H text)
            use_linear_projection=True)  # sd-2-1 unet/config.json
register("sd15_unet", UNet2DConfig())
register("sd21_base_unet", UNet2DConfig(**_SD2))  # sd-2-1-base: epsilon, sample_size 64
register("sd21_unet", UNet2DConfig(
    **_SD2, sample_size=96,  # sd-2-1 unet/config.json
    prediction_type="v_prediction"))  # sd-2-1 scheduler/scheduler_config.json
register("sd2_depth_unet", UNet2DConfig(
    **_SD2, in_channels=5))  # sd-2-depth unet/config.json: 4 latents + 1 depth


# ----------------------------------------------------------------------------- DepthCrafter
@dataclasses.dataclass(frozen=True)
class UNetSTConfig:
    """diffusers ``UNetSpatioTemporalConditionModel`` (defaults: DepthCrafter / SVD-xt
    ``unet/config.json``, equal to the diffusers class defaults)."""

    in_channels: int = 8  # DepthCrafter unet/config.json: noisy depth + video latents
    out_channels: int = 4  # DepthCrafter unet/config.json
    block_out_channels: Tuple[int, ...] = (320, 640, 1280, 1280)  # DepthCrafter unet/config.json
    layers_per_block: int = 2  # DepthCrafter unet/config.json
    heads: Tuple[int, ...] = (5, 10, 20, 20)  # DepthCrafter unet/config.json num_attention_heads
    cross_attention_dim: int = 1024  # DepthCrafter unet/config.json (CLIP ViT-H image embeds)
    # CrossAttnDownBlockSpatioTemporal x3 + DownBlockSpatioTemporal (unet/config.json).
    cross_attn: Tuple[bool, ...] = (True, True, True, False)
    transformer_layers_per_block: int = 1  # DepthCrafter unet/config.json
    addition_time_embed_dim: int = 256  # DepthCrafter unet/config.json
    num_time_ids: int = 3  # projection_class_embeddings_input_dim 768 = 3 x 256 (unet/config.json)
    fps: float = 7.0  # depthcrafter/depth_crafter_ppl.py: _get_add_time_ids(7, 127, ...)
    motion_bucket_id: float = 127.0  # depthcrafter/depth_crafter_ppl.py
    noise_aug_strength: float = 0.02  # depthcrafter/depth_crafter_ppl.py __call__ default
    num_frames: int = 25  # DepthCrafter unet/config.json (training length; any T works)

    def __post_init__(self):
        _check_levels(self)


register("depthcrafter_unet", UNetSTConfig())


# ----------------------------------------------------------------------------- CLIP
@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
    """CLIP text tower (defaults: OpenCLIP ViT-H-14, open_clip model_configs/ViT-H-14.json)."""

    vocab_size: int = 49408  # ViT-H-14.json text_cfg
    context_length: int = 77  # ViT-H-14.json text_cfg
    width: int = 1024  # ViT-H-14.json text_cfg
    layers: int = 24  # ViT-H-14.json text_cfg
    heads: int = 16  # ViT-H-14.json text_cfg
    mlp_dim: int = 4096  # open_clip CLIPTextCfg mlp_ratio 4.0 x width
    activation: str = "gelu"  # open_clip: nn.GELU unless quick_gelu is requested
    layer_norm_eps: float = 1e-5  # torch nn.LayerNorm default (open_clip), HF CLIPTextConfig
    projection_dim: Optional[int] = 1024  # ViT-H-14.json embed_dim; None: no text_projection
    # Pool at the first eos_token_id; None pools at argmax(tokens) like OpenCLIP and HF
    # configs with the legacy eos_token_id 2 (SD 1.5 and SD 2 text_encoder/config.json).
    eos_token_id: Optional[int] = None

    def __post_init__(self):
        if self.activation not in ("gelu", "quick_gelu"):
            raise ValueError(f"activation must be 'gelu' or 'quick_gelu', got {self.activation!r}")
        if self.width % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide width ({self.width})")


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
    """CLIP vision tower (defaults: OpenCLIP ViT-H-14, open_clip model_configs/ViT-H-14.json)."""

    image_size: int = 224  # ViT-H-14.json vision_cfg
    patch_size: int = 14  # ViT-H-14.json vision_cfg
    width: int = 1280  # ViT-H-14.json vision_cfg
    layers: int = 32  # ViT-H-14.json vision_cfg
    heads: int = 16  # ViT-H-14.json: width 1280 / head_width 80
    mlp_dim: int = 5120  # open_clip CLIPVisionCfg mlp_ratio 4.0 x width
    activation: str = "gelu"  # open_clip nn.GELU
    layer_norm_eps: float = 1e-5  # torch nn.LayerNorm default (open_clip), HF CLIPVisionConfig
    projection_dim: Optional[int] = 1024  # ViT-H-14.json embed_dim; None: no projection

    def __post_init__(self):
        if self.activation not in ("gelu", "quick_gelu"):
            raise ValueError(f"activation must be 'gelu' or 'quick_gelu', got {self.activation!r}")
        if self.width % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide width ({self.width})")
        if self.image_size % self.patch_size:
            raise ValueError(f"patch_size ({self.patch_size}) must divide image_size "
                             f"({self.image_size})")


register("openclip_vit_h14_text", CLIPTextConfig())
register("openclip_vit_h14_vision", CLIPVisionConfig())
register("sd15_text_encoder", CLIPTextConfig(  # CLIP ViT-L/14, sd-v1-5 text_encoder/config.json
    width=768, layers=12, heads=12, mlp_dim=3072, activation="quick_gelu",
    projection_dim=None))  # CLIPTextModel has no projection
register("sd2_text_encoder", CLIPTextConfig(  # OpenCLIP ViT-H text as HF CLIPTextModel
    layers=23,  # sd-2-1 text_encoder/config.json: the last block is dropped (penultimate)
    projection_dim=None))  # CLIPTextModel has no projection
register("svd_xt_image_encoder", CLIPVisionConfig())  # SVD-xt image_encoder/config.json: ViT-H/14, projection 1024


# ----------------------------------------------------------------------------- VAEs
@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """KL autoencoder shared by lvdm ``ae_modules`` and diffusers ``AutoencoderKL``
    (defaults: SD 1.5 ``vae/config.json``; DynamiCrafter's ddconfig and SD 2.x are the same).

    lvdm ddconfig names: ch * ch_mult = block_out_channels, num_res_blocks =
    layers_per_block, z_channels = embed_dim = latent_channels. Latents are multiplied by
    ``scaling_factor`` by the callers, not by the network.
    """

    in_channels: int = 3  # sd-v1-5 vae/config.json; inference_512_v1.0.yaml in_channels
    out_channels: int = 3  # sd-v1-5 vae/config.json; inference_512_v1.0.yaml out_ch
    block_out_channels: Tuple[int, ...] = (128, 256, 512, 512)  # sd-v1-5 vae; 512 yaml ch 128 x ch_mult 1,2,4,4
    layers_per_block: int = 2  # sd-v1-5 vae/config.json; inference_512_v1.0.yaml num_res_blocks
    latent_channels: int = 4  # sd-v1-5 vae/config.json; inference_512_v1.0.yaml z_channels, embed_dim
    norm_num_groups: int = 32  # sd-v1-5 vae/config.json; lvdm ae_modules.Normalize
    use_quant_conv: bool = True  # AutoencoderKL default; lvdm AutoencoderKL always has it
    use_post_quant_conv: bool = True  # AutoencoderKL default; lvdm AutoencoderKL always has it
    mid_block_add_attention: bool = True  # AutoencoderKL default; lvdm mid.attn_1
    scaling_factor: float = 0.18215  # AutoencoderKL default; inference_512_v1.0.yaml scale_factor
    # Project option: the decoder's widths, one per level like block_out_channels (so the same
    # latent size and interface); None = block_out_channels, as in every released VAE.
    decoder_block_out_channels: Optional[Tuple[int, ...]] = None

    @property
    def decoder_channels(self) -> Tuple[int, ...]:
        return self.decoder_block_out_channels or self.block_out_channels

    def __post_init__(self):
        if not self.block_out_channels:
            raise ValueError("block_out_channels must not be empty")
        for name in ("block_out_channels", "decoder_block_out_channels"):
            widths = getattr(self, name) or ()
            if any(c % self.norm_num_groups for c in widths):
                raise ValueError(f"norm_num_groups ({self.norm_num_groups}) must divide every "
                                 f"{name} entry {widths}")
        if len(self.decoder_channels) != len(self.block_out_channels):
            raise ValueError(f"decoder_block_out_channels: expected {len(self.block_out_channels)} "
                             f"levels like block_out_channels, got {self.decoder_block_out_channels}")

    @classmethod
    def from_lvdm(cls, ddconfig: dict, embed_dim: int) -> "VAEConfig":
        """From an lvdm ``first_stage_config.params`` (``ddconfig`` and ``embed_dim``)."""
        if embed_dim != ddconfig.get("z_channels"):
            raise ValueError(f"embed_dim ({embed_dim}) must equal ddconfig z_channels "
                             f"({ddconfig.get('z_channels')})")
        if not ddconfig.get("double_z", True) or ddconfig.get("attn_resolutions"):
            raise ValueError("ddconfig: only double_z=True and attn_resolutions=[] are supported")
        return cls(in_channels=ddconfig["in_channels"], out_channels=ddconfig["out_ch"],
                   block_out_channels=tuple(ddconfig["ch"] * m for m in ddconfig["ch_mult"]),
                   layers_per_block=ddconfig["num_res_blocks"], latent_channels=embed_dim)

    @classmethod
    def from_diffusers(cls, config: dict) -> "VAEConfig":
        """From a diffusers ``AutoencoderKL`` ``config.json`` dict."""
        return _from_kwargs(
            cls, {k: v for k, v in config.items() if not k.startswith("_")},
            ignored=("down_block_types", "up_block_types", "sample_size", "force_upcast",
                     "shift_factor", "latents_mean", "latents_std"),
            fixed={"act_fn": "silu"})


@dataclasses.dataclass(frozen=True)
class TemporalVAEConfig:
    """diffusers ``AutoencoderKLTemporalDecoder`` (defaults: SVD-xt ``vae/config.json``)."""

    in_channels: int = 3  # svd-xt vae/config.json
    out_channels: int = 3  # svd-xt vae/config.json
    block_out_channels: Tuple[int, ...] = (128, 256, 512, 512)  # svd-xt vae/config.json
    layers_per_block: int = 2  # svd-xt vae/config.json
    latent_channels: int = 4  # svd-xt vae/config.json
    norm_num_groups: int = 32  # diffusers TemporalDecoder / Encoder default (fixed)
    scaling_factor: float = 0.18215  # svd-xt vae/config.json

    def __post_init__(self):
        if self.layers_per_block != 2:
            # MidBlockTemporalDecoder runs only resnets[0], attention, resnets[1].
            raise ValueError(f"layers_per_block must be 2, got {self.layers_per_block}")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(f"norm_num_groups ({self.norm_num_groups}) must divide every "
                             f"block_out_channels entry {self.block_out_channels}")

    @classmethod
    def from_diffusers(cls, config: dict) -> "TemporalVAEConfig":
        """From a diffusers ``AutoencoderKLTemporalDecoder`` ``config.json`` dict."""
        return _from_kwargs(
            cls, {k: v for k, v in config.items() if not k.startswith("_")},
            ignored=("down_block_types", "sample_size", "force_upcast"), fixed={})


register("sd15_vae", VAEConfig())
register("sd2_vae", VAEConfig())  # sd-2-1 vae/config.json: same as SD 1.5 (sample_size 768)
register("dynamicrafter_vae", VAEConfig())  # inference_512_v1.0.yaml first_stage_config (all sizes)
register("svd_xt_vae", TemporalVAEConfig())
