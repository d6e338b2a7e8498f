"""Convert DepthCrafter: its UNet plus SVD-xt's VAE (temporal decoder) and image encoder.

    python -m convert.depthcrafter --checkpoint DepthCrafter --svd_dir stable-video-diffusion-img2vid-xt \
        --output_dir ckpt/dynamicrafter_512 [--dtype bfloat16] [--variant fp16]

``--checkpoint`` is the DepthCrafter diffusers folder (holding ``unet/``, or the ``unet`` folder
itself); ``--svd_dir`` holds SVD-xt's ``vae/`` and ``image_encoder/`` (default: ``--checkpoint``).
Writes ``<output_dir>/depth_unet`` (family ``unet_st``), ``/depth_vae`` (``temporal_vae``) and
``/depth_image_encoder`` (``clip_vision``), the layout `szero_jax.pipelines.bundles` reads
beside a video model: point ``--output_dir`` at a converted DynamiCrafter checkpoint to attach
the depth model to it. Loading is weights-only; every tensor must map onto a Flax param of the
right shape, else the converter fails listing every problem (on shapes, before any weight is
read); then each network is streamed tensor by tensor into its file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from convert import common
from convert.stable_diffusion import (_check_options, _per_level, _shapes, component_job,
                                      read_json, write_components)
from szero_jax.models import clip_keymaps
from szero_jax.models import configs as C
from szero_jax.models import vae_keymaps
from szero_jax.models.unet_keymap import diffusers_unet_key

OUTPUTS = {"unet": "depth_unet", "vae": "depth_vae", "image_encoder": "depth_image_encoder"}

_ST_KNOWN = {"sample_size", "in_channels", "out_channels", "down_block_types", "up_block_types",
             "block_out_channels", "addition_time_embed_dim",
             "projection_class_embeddings_input_dim", "layers_per_block", "cross_attention_dim",
             "transformer_layers_per_block", "num_attention_heads", "num_frames"}


def unet_st_config_from_diffusers(cfg: dict) -> C.UNetSTConfig:
    """A ``UNetSTConfig`` from a diffusers ``UNetSpatioTemporalConditionModel`` config dict."""
    _check_options(cfg, {}, _ST_KNOWN, "unet/config.json")
    d = C.UNetSTConfig()
    channels = tuple(cfg.get("block_out_channels", d.block_out_channels))
    n = len(channels)
    down = tuple(cfg.get("down_block_types", ("CrossAttnDownBlockSpatioTemporal",) * (n - 1)
                         + ("DownBlockSpatioTemporal",)))
    cross = tuple(t == "CrossAttnDownBlockSpatioTemporal" for t in down)
    mirrored = tuple("CrossAttnUpBlockSpatioTemporal" if a else "UpBlockSpatioTemporal"
                     for a in reversed(cross))
    up = tuple(cfg.get("up_block_types", mirrored))
    if any(t not in ("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal") for t in down) \
            or up != mirrored:
        raise ValueError(f"unet/config.json: block types {down} / {up} are not supported")
    for key in ("layers_per_block", "cross_attention_dim", "transformer_layers_per_block"):
        if not isinstance(cfg.get(key, 1), int):
            raise ValueError(f"unet/config.json: {key} must be one int, got {cfg[key]!r}")
    time_dim = cfg.get("addition_time_embed_dim", d.addition_time_embed_dim)
    proj = cfg.get("projection_class_embeddings_input_dim", d.num_time_ids * time_dim)
    if proj % time_dim:
        raise ValueError(f"unet/config.json: projection_class_embeddings_input_dim {proj} is not "
                         f"a multiple of addition_time_embed_dim {time_dim}")
    return C.UNetSTConfig(
        in_channels=cfg.get("in_channels", d.in_channels),
        out_channels=cfg.get("out_channels", d.out_channels), block_out_channels=channels,
        layers_per_block=cfg.get("layers_per_block", d.layers_per_block),
        heads=_per_level(cfg.get("num_attention_heads", d.heads), n, "unet/config.json num_attention_heads"),
        cross_attention_dim=cfg.get("cross_attention_dim", d.cross_attention_dim), cross_attn=cross,
        transformer_layers_per_block=cfg.get("transformer_layers_per_block", 1),
        addition_time_embed_dim=time_dim, num_time_ids=proj // time_dim,
        num_frames=cfg.get("num_frames", d.num_frames))


def clip_vision_config_from_hf(cfg: dict) -> C.CLIPVisionConfig:
    """A ``CLIPVisionConfig`` from a transformers ``image_encoder/config.json`` dict."""
    act = cfg.get("hidden_act", "quick_gelu")  # transformers CLIPVisionConfig default
    if act not in ("gelu", "quick_gelu"):
        raise ValueError(f"image_encoder/config.json: hidden_act {act!r} is not supported")
    return C.CLIPVisionConfig(
        image_size=cfg["image_size"], patch_size=cfg["patch_size"], width=cfg["hidden_size"],
        layers=cfg["num_hidden_layers"], heads=cfg["num_attention_heads"],
        mlp_dim=cfg["intermediate_size"], activation=act,
        layer_norm_eps=cfg.get("layer_norm_eps", 1e-5),  # transformers CLIPVisionConfig default
        projection_dim=cfg.get("projection_dim"))


def unet_st_shapes(cfg: C.UNetSTConfig):
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    from szero_jax.models.unet_st import UNetSpatioTemporal  # pylint: disable=import-outside-toplevel
    s = 2 ** (len(cfg.block_out_channels) - 1)
    return _shapes(UNetSpatioTemporal(cfg), jnp.zeros((1, 1, s, s, cfg.in_channels)),
                   jnp.zeros((1,)), jnp.zeros((1, 1, cfg.cross_attention_dim)))


def temporal_vae_shapes(cfg: C.TemporalVAEConfig):
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    from szero_jax.models.vae import AutoencoderKLTemporalDecoder  # pylint: disable=import-outside-toplevel
    s = 2 ** (len(cfg.block_out_channels) - 1)
    net = AutoencoderKLTemporalDecoder(cfg)
    return jax.eval_shape(lambda k, x: net.init(k, x, 1), jax.random.key(0),
                          jnp.zeros((1, s, s, cfg.in_channels)))["params"]


def vision_shapes(cfg: C.CLIPVisionConfig):
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    from szero_jax.models.clip import CLIPVisionEncoder  # pylint: disable=import-outside-toplevel
    return _shapes(CLIPVisionEncoder(cfg), jnp.zeros((1, cfg.image_size, cfg.image_size, 3)))


def unet_folder(unet_dir: Path) -> Path:
    """``unet_dir/unet`` if present, else ``unet_dir`` itself (a bare UNet folder)."""
    return unet_dir / "unet" if (unet_dir / "unet" / "config.json").is_file() else unet_dir


def components(unet_dir: Path, svd_dir: Path, variant: Optional[str] = None) -> dict:
    """{output name: (Job, config, family)} (configs read, weights opened lazily)."""
    ufolder = unet_folder(unet_dir)
    unet_cfg = unet_st_config_from_diffusers(read_json(ufolder / "config.json", "unet_dir"))
    vae_cfg = C.TemporalVAEConfig.from_diffusers(read_json(svd_dir / "vae" / "config.json", "svd_dir"))
    vis_cfg = clip_vision_config_from_hf(read_json(svd_dir / "image_encoder" / "config.json", "svd_dir"))
    return {
        OUTPUTS["unet"]: (component_job(ufolder.name, ufolder.parent, variant, diffusers_unet_key,
                                        unet_st_shapes(unet_cfg)), unet_cfg, "unet_st"),
        OUTPUTS["vae"]: (component_job("vae", svd_dir, variant, vae_keymaps.temporal_keymap(vae_cfg),
                                       temporal_vae_shapes(vae_cfg)), vae_cfg, "temporal_vae"),
        OUTPUTS["image_encoder"]: (component_job(
            "image_encoder", svd_dir, variant, clip_keymaps.hf_vision_keymap(),
            vision_shapes(vis_cfg), ("vision_model.embeddings.position_ids",)),
            vis_cfg, "clip_vision")}


def run(checkpoint: str, output_dir: str, svd_dir: Optional[str] = None,
        variant: Optional[str] = None, dtype: str = "float32", overwrite: bool = False) -> list[Path]:
    """Converts DepthCrafter (``checkpoint``: its folder) + SVD-xt parts into ``output_dir``;
    returns the three written checkpoints.

    (``checkpoint`` names the UNet folder so `experiments/convert.py --checkpoint` can
    dispatch here; ``svd_dir`` defaults to it.)
    """
    unet_dir, out = Path(checkpoint), Path(output_dir)
    np_dtype = common.output_dtype(dtype)
    svd = Path(svd_dir) if svd_dir else unet_dir
    for name, path in (("unet_dir", unet_dir), ("svd_dir", svd)):
        if not path.is_dir():
            raise FileNotFoundError(f"{name}: no folder at {path}")
    existing = [n for n in OUTPUTS.values() if (out / n).exists()]
    if existing and not overwrite:
        raise ValueError(f"output_dir: {out} already has {existing}; pass --overwrite to replace")
    return write_components(components(unet_dir, svd, variant), out, np_dtype, overwrite)


if __name__ == "__main__":
    from experiments import convert as launcher  # pylint: disable=import-outside-toplevel
    launcher.run_as("depthcrafter")
