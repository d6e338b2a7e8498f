"""Full-size stand-ins for the released checkpoints, made on the spot (tests, benchmarks, and a
user checking a machine before a 10 GB download): the real files' layouts, names, shapes and
dtypes, with random values.

* `dynamicrafter_checkpoint`: DynamiCrafter's ``model.ckpt`` from its key inventory
  (``tests/fixtures/dynamicrafter/dynamicrafter_512_key_shapes.json``: 2,507 tensors) plus the
  diffusion wrapper's schedule buffers, saved with ``torch.save({"state_dict": ...})``
  (10.4 GB at 512).
* `openclip_checkpoint`: OpenCLIP ViT-H-14's ``open_clip_pytorch_model.bin`` from the same
  inventory (the text tower under ``cond_stage_model.model.``, the visual one under
  ``embedder.model.visual.``).
* `depthcrafter_folders` / `sd21_folder`: diffusers folders written by diffusers and
  transformers themselves from the full-size configurations (random initialisation, then
  ``save_pretrained``), so file names, layout and dtypes are the libraries' own.

Memory: the torch checkpoints are generated tensor by tensor into a scratch file and saved
from a copy-on-write mapping of it, so building one takes a few hundred MB of anonymous
memory (and, for a while, twice the checkpoint's disk space); the diffusers folders hold one
model at a time (the largest, SD 2.1's UNet in float32, 3.5 GB).
``experiments/benchmark_convert.py`` builds them, converts them and reports the memory.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from convert.keymaps_dynamicrafter import SCHEDULE_BUFFERS

KEY_SHAPES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "dynamicrafter" / \
    "dynamicrafter_512_key_shapes.json"
TIMESTEPS = 1000  # inference_512_v1.0.yaml timesteps
_SCALARS = ("scale_factor",)  # 0-d buffers of lvdm's LatentDiffusion

# tencent/DepthCrafter unet/config.json (= SVD-xt's UNet)
DEPTHCRAFTER_UNET = dict(
    addition_time_embed_dim=256, block_out_channels=[320, 640, 1280, 1280],
    cross_attention_dim=1024,
    down_block_types=["CrossAttnDownBlockSpatioTemporal"] * 3 + ["DownBlockSpatioTemporal"],
    in_channels=8, layers_per_block=2, num_attention_heads=[5, 10, 20, 20], num_frames=25,
    out_channels=4, projection_class_embeddings_input_dim=768, sample_size=96,
    transformer_layers_per_block=1,
    up_block_types=["UpBlockSpatioTemporal"] + ["CrossAttnUpBlockSpatioTemporal"] * 3)
# stable-video-diffusion-img2vid-xt vae/config.json
SVD_XT_VAE = dict(block_out_channels=[128, 256, 512, 512],
                  down_block_types=["DownEncoderBlock2D"] * 4, force_upcast=True, in_channels=3,
                  latent_channels=4, layers_per_block=2, out_channels=3, sample_size=768,
                  scaling_factor=0.18215)
# stable-video-diffusion-img2vid-xt image_encoder/config.json (ViT-H/14, projection 1024)
SVD_XT_IMAGE_ENCODER = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                            num_attention_heads=16, image_size=224, patch_size=14,
                            projection_dim=1024, hidden_act="gelu")
# stabilityai/stable-diffusion-2-1 unet/config.json
SD21_UNET = dict(
    act_fn="silu", attention_head_dim=[5, 10, 20, 20], block_out_channels=[320, 640, 1280, 1280],
    center_input_sample=False, cross_attention_dim=1024,
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"], downsample_padding=1,
    flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2,
    mid_block_scale_factor=1, norm_eps=1e-05, norm_num_groups=32, out_channels=4,
    sample_size=96, up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    upcast_attention=True, use_linear_projection=True)
# stabilityai/stable-diffusion-2-1 vae/config.json
SD21_VAE = dict(act_fn="silu", block_out_channels=[128, 256, 512, 512],
                down_block_types=["DownEncoderBlock2D"] * 4, in_channels=3, latent_channels=4,
                layers_per_block=2, norm_num_groups=32, out_channels=3, sample_size=768,
                up_block_types=["UpDecoderBlock2D"] * 4)
# stabilityai/stable-diffusion-2-1 text_encoder/config.json (OpenCLIP ViT-H text, 23 blocks)
SD21_TEXT = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                 num_attention_heads=16, hidden_act="gelu", projection_dim=512,
                 max_position_embeddings=77, vocab_size=49408)
# stabilityai/stable-diffusion-2-1 scheduler/scheduler_config.json
SD21_SCHEDULER = dict(beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085,
                      clip_sample=False, num_train_timesteps=1000,
                      prediction_type="v_prediction", set_alpha_to_one=False, steps_offset=1)


def key_shapes(path: str | os.PathLike = KEY_SHAPES) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v) for k, v in json.loads(Path(path).read_text()).items()}


def dynamicrafter_shapes(path: str | os.PathLike = KEY_SHAPES) -> dict[str, tuple[int, ...]]:
    """The released checkpoint's tensors: the inventory plus the schedule buffers."""
    shapes = key_shapes(path)
    shapes.update({b: () if b in _SCALARS else (TIMESTEPS,) for b in SCHEDULE_BUFFERS})
    return shapes


def openclip_shapes(path: str | os.PathLike = KEY_SHAPES) -> dict[str, tuple[int, ...]]:
    """open_clip ViT-H-14's state dict, assembled from DynamiCrafter's two towers."""
    shapes = key_shapes(path)
    text = {k.removeprefix("cond_stage_model.model."): s for k, s in shapes.items()
            if k.startswith("cond_stage_model.model.")}
    visual = {k.removeprefix("embedder.model."): s for k, s in shapes.items()
              if k.startswith("embedder.model.visual.")}
    return {**text, **visual}


def random_tensor(key: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Values a forward pass survives: kernels ~ N(0, 1/fan_in), norm scales ~ 1 + N(0, 0.05^2),
    biases and everything else ~ N(0, 0.05^2); schedule buffers uniform in (0, 1)."""
    if key in SCHEDULE_BUFFERS:
        return rng.uniform(0.01, 1.0, shape).astype(np.float32)
    x = rng.standard_normal(shape, dtype=np.float32)
    leaf = key.rsplit(".", 1)[-1]
    if leaf.endswith("weight") and len(shape) >= 2 and "embedding" not in key:
        x *= np.float32(1.0 / np.sqrt(max(1, int(np.prod(shape[1:])))))
    elif leaf == "weight" and len(shape) == 1:
        x *= np.float32(0.05)
        x += np.float32(1.0)
    else:
        x *= np.float32(0.05)
    return x


def torch_checkpoint(path: str | os.PathLike, shapes: Mapping[str, tuple[int, ...]],
                     seed: int = 0, wrap: bool = True) -> Path:
    """Writes a float32 ``torch.save`` checkpoint of ``shapes`` with random values.

    ``wrap``: ``{"state_dict": tensors}`` (Lightning, DynamiCrafter) or the bare dict
    (open_clip). Each tensor is its own storage, as in a saved module. Values come from
    `random_tensor` with ``np.random.default_rng(seed)`` in ``shapes`` order.
    """
    import torch  # pylint: disable=import-outside-toplevel
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw, tmp = path.with_name(f".{path.name}.raw"), path.with_name(f".{path.name}.tmp")
    rng = np.random.default_rng(seed)
    spans, offset = {}, 0
    try:
        with open(raw, "wb") as f:                 # generated one tensor at a time
            for key, shape in shapes.items():
                x = random_tensor(key, tuple(shape), rng)
                x.tofile(f)
                spans[key] = (offset, x.size)
                offset += x.size
        # A copy-on-write mapping that is only read: its pages are the file's, which the
        # kernel can drop at any time, so the save needs no anonymous copy.
        mm = np.memmap(raw, np.float32, "c") if offset else np.zeros(0, np.float32)
        state = {}
        for key, shape in shapes.items():
            start, n = spans[key]
            state[key] = (torch.frombuffer(memoryview(mm[start:start + n]), dtype=torch.float32)
                          .reshape(tuple(shape)) if n else torch.zeros(tuple(shape)))
        torch.save({"state_dict": state} if wrap else state, tmp)
        del state, mm
        os.replace(tmp, path)
    finally:
        raw.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return path


def dynamicrafter_checkpoint(path, seed: int = 0, inventory=KEY_SHAPES) -> Path:
    """The DynamiCrafter 512 ``model.ckpt`` stand-in (10.4 GB)."""
    return torch_checkpoint(path, dynamicrafter_shapes(inventory), seed)


def openclip_checkpoint(path, seed: int = 0, inventory=KEY_SHAPES) -> Path:
    """The ``open_clip_pytorch_model.bin`` (ViT-H-14) stand-in (3.9 GB)."""
    return torch_checkpoint(path, openclip_shapes(inventory), seed, wrap=False)


class _default_dtype:
    """Builds torch modules directly in ``dtype`` (no float32 copy first)."""

    def __init__(self, dtype):
        self.dtype = dtype

    def __enter__(self):
        import torch  # pylint: disable=import-outside-toplevel
        self.old = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)

    def __exit__(self, *_):
        import torch  # pylint: disable=import-outside-toplevel
        torch.set_default_dtype(self.old)


def _save(make, folder: Path, dtype, seed: int) -> None:
    import torch  # pylint: disable=import-outside-toplevel
    torch.manual_seed(seed)
    with torch.no_grad(), _default_dtype(dtype):
        model = make()
    model.save_pretrained(folder)
    del model


def depthcrafter_folders(root: str | os.PathLike, seed: int = 0,
                         unet_dtype: str = "float16") -> tuple[Path, Path]:
    """``root/DepthCrafter/unet`` (UNetSpatioTemporalConditionModel, ``unet_dtype``) and
    ``root/svd/{vae, image_encoder}`` (float32, SVD-xt's plain files); returns the two
    folders (``--checkpoint``, ``--svd_dir``)."""
    import torch  # pylint: disable=import-outside-toplevel
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel  # pylint: disable=import-outside-toplevel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection  # pylint: disable=import-outside-toplevel
    root = Path(root)
    dc, svd = root / "DepthCrafter", root / "svd"
    _save(lambda: UNetSpatioTemporalConditionModel(**DEPTHCRAFTER_UNET), dc / "unet",
          getattr(torch, unet_dtype), seed)
    _save(lambda: AutoencoderKLTemporalDecoder(**SVD_XT_VAE), svd / "vae", torch.float32, seed + 1)
    _save(lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**SVD_XT_IMAGE_ENCODER)),
          svd / "image_encoder", torch.float32, seed + 2)
    return dc, svd


def sd21_folder(root: str | os.PathLike, seed: int = 0) -> Path:
    """``root/stable-diffusion-2-1/{unet, vae, text_encoder, tokenizer, scheduler}`` in float32
    (the tokenizer: `clip_tokenizer_folder`)."""
    import torch  # pylint: disable=import-outside-toplevel
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel  # pylint: disable=import-outside-toplevel
    from transformers import CLIPTextConfig, CLIPTextModel  # pylint: disable=import-outside-toplevel
    folder = Path(root) / "stable-diffusion-2-1"
    _save(lambda: UNet2DConditionModel(**SD21_UNET), folder / "unet", torch.float32, seed)
    _save(lambda: AutoencoderKL(**SD21_VAE), folder / "vae", torch.float32, seed + 1)
    _save(lambda: CLIPTextModel(CLIPTextConfig(**SD21_TEXT)), folder / "text_encoder",
          torch.float32, seed + 2)
    DDIMScheduler(**SD21_SCHEDULER).save_pretrained(folder / "scheduler")
    clip_tokenizer_folder(folder / "tokenizer", pad_token="!")  # SD 2's pad token
    return folder


def clip_tokenizer_folder(folder: Path, pad_token: str) -> Path:
    """A diffusers ``tokenizer/`` folder as the hub has it (``vocab.json``, ``merges.txt``,
    ``special_tokens_map.json``, ``tokenizer_config.json``), CLIP's BPE vocabulary built from
    open_clip's merges file."""
    import gzip  # pylint: disable=import-outside-toplevel
    from convert.openclip import find_bpe_vocab  # pylint: disable=import-outside-toplevel
    from szero_jax.models.tokenizer import _bytes_to_unicode  # pylint: disable=import-outside-toplevel
    with gzip.open(find_bpe_vocab(), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]  # OpenAI CLIP's tokenizer: the first 48894 merges
    alphabet = list(_bytes_to_unicode().values())
    words = alphabet + [a + "</w>" for a in alphabet] + ["".join(m.split()) for m in merges]
    words += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({w: i for i, w in enumerate(words)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
               "unk_token": "<|endoftext|>", "pad_token": pad_token}
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        dict(special, tokenizer_class="CLIPTokenizer", model_max_length=77,
             do_lower_case=True)))
    return folder


STANDINS = ("dynamicrafter", "openclip", "depthcrafter", "sd21")


def make(name: str, root: str | os.PathLike, seed: int = 0):
    """Builds stand-in ``name`` under ``root``; returns what the converter's --checkpoint
    takes (and for depthcrafter also --svd_dir)."""
    root = Path(root)
    if name == "dynamicrafter":
        return dynamicrafter_checkpoint(root / "dynamicrafter_512" / "model.ckpt", seed)
    if name == "openclip":
        return openclip_checkpoint(root / "openclip" / "open_clip_pytorch_model.bin", seed)
    if name == "depthcrafter":
        return depthcrafter_folders(root, seed)
    if name == "sd21":
        return sd21_folder(root, seed)
    raise ValueError(f"name: expected one of {STANDINS}, got {name!r}")
