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
