"""Model bundles: configs + params + tokenizer of one model family, and their loaders.

* ``VideoModels``: DynamiCrafter (video UNet, Resampler, VAE, CLIP text and vision towers)
  plus an optional ``DepthModels`` (DepthCrafter-architecture UNet; VAE and image encoder
  default to the video model's, as in the tiny family).
* ``SDModels``: Stable Diffusion (UNet2DCondition, VAE, CLIP text tower, tokenizer).

Checkpoint directories (``szero_jax.checkpoints`` format, one per network):
    <dir>/{vae, text_encoder, image_encoder, resampler, video_unet}/   the tiny-family layout
    <dir>/config.json with family "dynamicrafter"                      convert/dynamicrafter.py
    <dir>/{depth_unet, depth_vae, depth_image_encoder}/                optional depth model
    <dir>/tokenizer/  CLIP BPE files (vocab.json + merges.txt, or OpenCLIP's vocab .txt.gz);
                      without it the tiny word tokenizer (szero_jax.world.VOCABULARY) is used
                      when the text tower's vocabulary matches it
    SD: <dir>/{unet, vae, text_encoder}/ + <dir>/tokenizer/, or a tiny family with sd_unet/
``load_video_models()`` / ``load_sd_models()`` with no path load the shipped tiny family (the
tiny SD shares the family's VAE and text encoder). The loaders read the params
in the run's dtype, one tensor at a time (``checkpoints.load_params(dtype=...)``): a bfloat16
run never holds a float32 copy, and loading peaks at about the params' bytes in that dtype.
Each load logs its params' bytes and the process's peak resident memory.
"""
from __future__ import annotations

import dataclasses
import resource
import sys
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from szero_jax import checkpoints
from szero_jax.models import configs as C
from szero_jax.models.clip import CLIPTextEncoder, CLIPVisionEncoder
from szero_jax.models.resampler import Resampler
from szero_jax.models.tokenizer import CLIPBPETokenizer, WordTokenizer
from szero_jax.models.unet2d import UNet2DCondition
from szero_jax.models.unet3d import UNet3D
from szero_jax.models.unet_st import UNetSpatioTemporal
from szero_jax.models.vae import AutoencoderKL, AutoencoderKLTemporalDecoder
from szero_jax.world import VOCABULARY

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True, eq=False)
class Net:
    """One network: its config and params. ``module(dtype)`` builds the Linen module."""
    config: Any
    params: Any

    def module(self, dtype=jnp.float32):
        cfg = self.config
        cls = {C.DynamiCrafterUNetConfig: UNet3D, C.ResamplerConfig: Resampler,
               C.VAEConfig: AutoencoderKL, C.TemporalVAEConfig: AutoencoderKLTemporalDecoder,
               C.CLIPTextConfig: CLIPTextEncoder, C.CLIPVisionConfig: CLIPVisionEncoder,
               C.UNet2DConfig: UNet2DCondition, C.UNetSTConfig: UNetSpatioTemporal}[type(cfg)]
        return cls(cfg, dtype=dtype)


@dataclasses.dataclass(frozen=True, eq=False)
class DepthModels:
    """DepthCrafter-architecture depth model: UNet on [noisy depth latent, video latent],
    one CLIP image embedding per frame."""
    unet: Net
    vae: Net
    image_encoder: Net


@dataclasses.dataclass(frozen=True, eq=False)
class VideoModels:
    config: C.DynamiCrafterConfig     # diffusion settings; config.unet / .resampler as loaded
    unet: Net
    resampler: Net
    vae: Net
    text_encoder: Net
    image_encoder: Net
    tokenizer: Any
    depth: Optional[DepthModels] = None
    dtype: Any = jnp.float32          # compute dtype; load_video_models also stores the
                                      # params in it (random_video_models keeps float32)

    @property
    def num_frames(self) -> int:
        return int(self.config.resampler.video_length or 1)

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


@dataclasses.dataclass(frozen=True, eq=False)
class SDModels:
    unet: Net
    vae: Net
    text_encoder: Net
    tokenizer: Any
    dtype: Any = jnp.float32

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def _dtype(dtype):
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
        return DTYPES[dtype]
    return dtype


def _net(path: Path, family: Optional[str] = None, dtype=None) -> Net:
    params, config = checkpoints.load_params(path, family, dtype)
    if isinstance(params, dict) and set(params) == {"params"}:   # saved as module.init returned it
        params = params["params"]
    return Net(config, params)


def load_tokenizer(folder: Path, text_config: C.CLIPTextConfig):
    """BPE from ``folder/tokenizer`` if present, else the tiny word tokenizer when the text
    tower's vocabulary is the world's."""
    tok = folder / "tokenizer"
    if (tok / "vocab.json").is_file():
        return CLIPBPETokenizer.from_folder(tok, text_config.context_length)
    gz = sorted(tok.glob("*.txt.gz")) if tok.is_dir() else []
    if gz:
        return CLIPBPETokenizer.from_openclip_vocab(gz[0], text_config.context_length)
    if text_config.vocab_size == len(VOCABULARY) + 4:
        return WordTokenizer(VOCABULARY, text_config.context_length)
    raise FileNotFoundError(
        f"checkpoint: no tokenizer in {tok} (expected vocab.json + merges.txt or OpenCLIP's "
        "bpe_simple_vocab_16e6.txt.gz, as convert/openclip.py writes)")


def _load_depth(root: Path, vae: Net, image_encoder: Net, dtype) -> Optional[DepthModels]:
    if not (root / "depth_unet").is_dir():
        return None
    return DepthModels(
        unet=_net(root / "depth_unet", dtype=dtype),
        vae=_net(root / "depth_vae", dtype=dtype) if (root / "depth_vae").is_dir() else vae,
        image_encoder=(_net(root / "depth_image_encoder", dtype=dtype)
                       if (root / "depth_image_encoder").is_dir() else image_encoder))


def peak_rss_bytes() -> int:
    """The process's peak resident memory so far (getrusage: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _log_load(root: Path, nets, dtype) -> None:
    unique = {id(n): n for n in nets}.values()     # the depth model may share the VAE
    total = sum(checkpoints.param_bytes(n.params) for n in unique)
    logging.info("loaded %s: %.2f GB of params as %s; peak resident memory %.2f GB", root,
                 total / 1e9, jnp.dtype(dtype).name, peak_rss_bytes() / 1e9)


def load_video_models(path=None, dtype="float32") -> VideoModels:
    """A ``VideoModels`` from a checkpoint directory, or the shipped tiny family (path None).

    ``dtype`` ("float32" / "bfloat16") is the compute dtype, and every float param is cast
    to it while it is read.
    """
    dtype = _dtype(dtype)
    root = checkpoints.TINY_DIR if path is None else Path(path)
    if not root.is_dir():
        raise FileNotFoundError(
            f"checkpoint: no directory at {root}" + (
                " (the tiny family is produced by experiments/train_tiny.py)" if path is None
                else ""))
    if (root / checkpoints.CONFIG_FILE).is_file():     # one converted DynamiCrafter checkpoint
        params, cfg = checkpoints.load_params(root, "dynamicrafter", dtype)
        nets = {"unet": Net(cfg.unet, params["unet"]),
                "resampler": Net(cfg.resampler, params["resampler"]),
                "vae": Net(C.get(cfg.vae), params["vae"]),
                "text_encoder": Net(C.get(cfg.text_encoder), params["text_encoder"]),
                "image_encoder": Net(C.get(cfg.image_encoder), params["image_encoder"])}
    else:
        missing = [n for n in ("vae", "text_encoder", "image_encoder", "resampler", "video_unet")
                   if not (root / n).is_dir()]
        if missing:
            raise FileNotFoundError(f"checkpoint: {root} lacks {missing}; expected one "
                                    "checkpoint per network (see szero_jax.pipelines.bundles)")
        video = _net(root / "video_unet", "dynamicrafter_unet", dtype)
        cfg = video.config
        if not isinstance(cfg, C.DynamiCrafterConfig):
            raise ValueError(f"checkpoint: {root / 'video_unet'} holds a "
                             f"{type(cfg).__name__}; expected a DynamiCrafterConfig")
        nets = {"unet": Net(cfg.unet, video.params),
                "resampler": _net(root / "resampler", "resampler", dtype),
                "vae": _net(root / "vae", "vae", dtype),
                "text_encoder": _net(root / "text_encoder", "clip_text", dtype),
                "image_encoder": _net(root / "image_encoder", "clip_vision", dtype)}
        cfg = dataclasses.replace(cfg, resampler=nets["resampler"].config)
    depth = _load_depth(root, nets["vae"], nets["image_encoder"], dtype)
    _log_load(root, list(nets.values()) + (
        [depth.unet, depth.vae, depth.image_encoder] if depth else []), dtype)
    return VideoModels(config=cfg, tokenizer=load_tokenizer(root, nets["text_encoder"].config),
                       depth=depth, dtype=dtype, **nets)


def load_sd_models(path=None, dtype="float32", depth: bool = False) -> SDModels:
    """An ``SDModels`` from ``path/{unet, vae, text_encoder, tokenizer}``, float params cast
    to ``dtype`` (the compute dtype) while they are read. A tiny-family directory (``sd_unet/``
    instead of ``unet/``) gives the tiny SD: its UNet on the family's own VAE and text
    encoder, read in place (no copies); ``depth`` takes its SD 2 depth UNet
    (``sd_depth_unet/``) instead; ``path`` None is the shipped family's. (A converted SD 2
    depth checkpoint is a ``unet/`` with 5 input channels: ``depth`` is not needed.)"""
    dtype = _dtype(dtype)
    root = checkpoints.TINY_DIR if path is None else Path(path)
    tiny_unet = root / ("sd_depth_unet" if depth else "sd_unet")
    unet_dir = root / "unet" if (root / "unet").is_dir() else tiny_unet
    missing = [n for n, p in (("unet", unet_dir), ("vae", root / "vae"),
                              ("text_encoder", root / "text_encoder")) if not p.is_dir()]
    if missing:
        raise FileNotFoundError(
            f"checkpoint: {root} lacks {missing}; expected an SD checkpoint with unet/, vae/, "
            "text_encoder/ and tokenizer/, or a tiny family with sd_unet/"
            + (f" (experiments/train_tiny.py --stage {'sd_depth' if depth else 'sd'} trains it)"
               if path is None else ""))
    nets = {"unet": _net(unet_dir, dtype=dtype), "vae": _net(root / "vae", dtype=dtype),
            "text_encoder": _net(root / "text_encoder", dtype=dtype)}
    for name, cls in (("unet", C.UNet2DConfig), ("vae", C.VAEConfig),
                      ("text_encoder", C.CLIPTextConfig)):
        if not isinstance(nets[name].config, cls):
            raise ValueError(f"checkpoint: {root / name} holds a {type(nets[name].config).__name__};"
                             f" expected a {cls.__name__}")
    _log_load(root, nets.values(), dtype)
    return SDModels(tokenizer=load_tokenizer(root, nets["text_encoder"].config), dtype=dtype,
                    **nets)


# ----------------------------------------------------------------------------- random weights
def _random_leaf(path, shape, rng):
    """Kernels ~ N(0, 1/fan_in), biases 0, norm scales 1, anything else ~ N(0, 0.02^2)."""
    name = str(getattr(path[-1], "key", path[-1]))
    if name == "bias":
        return jnp.zeros(shape)
    if name == "scale":
        return jnp.ones(shape)
    std = (1.0 / max(1, int(np.prod(shape[:-1])))) ** 0.5 if name == "kernel" else 0.02
    return jnp.asarray(std * rng.standard_normal(shape, np.float32))


def _init(net_config, key, *args) -> Net:
    """Random params from the module's shapes only (``eval_shape``: no init program to
    compile or run, which takes minutes on a loaded CPU for the video UNet)."""
    shapes = jax.eval_shape(Net(net_config, None).module().init, key, *args)["params"]
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())  # host RNG: no
    return Net(net_config, jax.tree_util.tree_unflatten(                  # per-shape compiles
        treedef, [_random_leaf(p, s.shape, rng) for p, s in leaves]))


def random_video_models(key, video: C.DynamiCrafterConfig, vae: C.VAEConfig,
                        text: C.CLIPTextConfig, vision: C.CLIPVisionConfig,
                        depth_unet: Optional[C.UNetSTConfig] = None, dtype="float32"
                        ) -> VideoModels:
    """A ``VideoModels`` with random params (tests, ``--random_weights_for_testing``); the
    tokenizer is the world's word tokenizer, so ``text.vocab_size`` must be
    ``len(VOCABULARY) + 4``."""
    ks = jax.random.split(key, 6)
    u, r = video.unet, video.resampler
    n_ctx = u.text_context_len + u.image_tokens_per_frame * (r.video_length or 1)
    s = 2 ** (len(u.channel_mult) - 1)
    t = r.video_length or 1
    img = jnp.zeros((1, vision.image_size, vision.image_size, 3))
    vae_s = 2 ** (len(vae.block_out_channels) - 1)
    nets = dict(
        unet=_init(u, ks[0], jnp.zeros((1, t, s, s, u.in_channels)), jnp.zeros((1,)),
                   jnp.zeros((1, n_ctx, u.context_dim))),
        resampler=_init(r, ks[1], jnp.zeros((1, 2, r.embedding_dim))),
        vae=_init(vae, ks[2], jnp.zeros((1, vae_s, vae_s, vae.in_channels))),
        text_encoder=_init(text, ks[3], jnp.zeros((1, text.context_length), jnp.int32)),
        image_encoder=_init(vision, ks[4], img))
    depth = None
    if depth_unet is not None:
        ds = 2 ** (len(depth_unet.block_out_channels) - 1)
        dnet = _init(depth_unet, ks[5], jnp.zeros((1, 2, ds, ds, depth_unet.in_channels)),
                     jnp.zeros((1,)), jnp.zeros((1, 2, depth_unet.cross_attention_dim)))
        depth = DepthModels(dnet, nets["vae"], nets["image_encoder"])
    return VideoModels(config=video, tokenizer=WordTokenizer(VOCABULARY, text.context_length),
                       depth=depth, dtype=_dtype(dtype), **nets)


def random_sd_models(key, unet: C.UNet2DConfig, vae: C.VAEConfig, text: C.CLIPTextConfig,
                     dtype="float32") -> SDModels:
    """An ``SDModels`` with random params and the world's word tokenizer (tests only)."""
    ks = jax.random.split(key, 3)
    s = 2 ** (len(unet.block_out_channels) - 1)
    vae_s = 2 ** (len(vae.block_out_channels) - 1)
    return SDModels(
        unet=_init(unet, ks[0], jnp.zeros((1, s, s, unet.in_channels)), jnp.zeros((1,)),
                   jnp.zeros((1, 1, unet.cross_attention_dim))),
        vae=_init(vae, ks[1], jnp.zeros((1, vae_s, vae_s, vae.in_channels))),
        text_encoder=_init(text, ks[2], jnp.zeros((1, text.context_length), jnp.int32)),
        tokenizer=WordTokenizer(VOCABULARY, text.context_length), dtype=_dtype(dtype))
