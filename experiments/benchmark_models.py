"""Forward time of each Flax network against the same PyTorch network, same weights and threads.

    python -m experiments.benchmark_models [--repeats 7] [--threads 0] [--only sd_unet,vae]
        [--full] [--full_frames 4] [--output_json out.json] [--torch_compile]

Per network: a PyTorch module (diffusers / transformers) is built at the config, its state
dict is converted with the project's key maps (the parity tests' path), and both forwards run
on the same inputs. The JAX side is ``jax.jit(model.apply)`` timed after compilation with
``block_until_ready``; the PyTorch side is eager under ``torch.inference_mode()``. The two are
timed *interleaved* (one JAX run, one torch run, repeated) so that load from other processes
hits both alike; each column is the median. Both the wall-clock time and the process's CPU
time per call (``time.process_time``: every thread, user + system) are reported: on a shared
machine the wall clock of either framework varies ~2x with the load, its CPU time by ~1-3 %. The outputs are compared (``rel_err`` = max abs
difference / max abs torch output), which shows the weights really are the same.

The DynamiCrafter UNet3D and Resampler have no PyTorch module here (lvdm is not installed; the
fixtures hold only tiny weights and outputs), so they are timed Flax-only.

Threads: ``--threads N`` (0 = every CPU this process may use) pins the process to N CPUs with
``sched_setaffinity`` *before* JAX is imported (XLA's CPU thread pool is sized from the
schedulable CPUs) and sets ``torch.set_num_threads(N)`` / ``set_num_interop_threads(1)``.
``--omp_passive`` (default) sets ``OMP_WAIT_POLICY=PASSIVE`` before torch is imported: with
spinning OpenMP workers, torch with 2 threads on 2 busy shared cores was 5-15x slower than with
1 thread (XLA's own pool does not spin like that). On a dedicated machine pass
``--noomp_passive`` to time torch's default. Both frameworks flush denormals (XLA CPU does by default; ``torch.set_flush_denormal(True)``).

Default sizes are small but real-shaped (reduced widths); ``--full`` adds one full-size
configuration per network (slow on a CPU: minutes per network).

``--attention_ratio`` times each network of the tiny family (random weights at the shipped
configs and the demo's sizes; the video UNet as the stereo call: 2 views x CFG halves, a
cross-view mode) under the default ``AttentionSettings`` and under ``attention.LEGACY`` (the
original attention and an unchunked feed-forward), interleaved, and prints new/old per
network (JAX only, no torch).
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from typing import Any, Callable

import numpy as np
from absl import app, flags

from experiments import common_flags as cf
from szero_jax.io.atomic import atomic_output

flags.DEFINE_integer("threads", 0, "CPU threads for both frameworks (0: all schedulable CPUs)")
flags.DEFINE_list("only", [], "run only these case names (prefix match), e.g. sd_unet,clip")
flags.DEFINE_bool("full", False, "also run one full-size configuration per network")
flags.DEFINE_bool("reduced", True, "run the reduced (small but real-shaped) configurations")
flags.DEFINE_integer("full_frames", 4, "frames for the full-size video networks")
flags.DEFINE_float("budget_s", 60.0, "soft cap on timed seconds per case (fewer repeats, min 3)")
flags.DEFINE_bool("torch_compile", False, "also time torch.compile (default mode) per case")
flags.DEFINE_bool("omp_passive", True, "set OMP_WAIT_POLICY=PASSIVE for torch (unless already "
                  "set): on a shared CPU, spinning OpenMP workers make torch several times slower")
flags.DEFINE_bool("attention_ratio", False, "instead: time the tiny family's networks on the "
                  "default attention settings (blockwise on a CPU) against the original path "
                  "(attention.LEGACY), interleaved in one run, and print the ratio")
cf.declare(__name__, "repeats", "output_json")  # timed runs per framework, interleaved
FLAGS = flags.FLAGS


@dataclasses.dataclass
class Case:
    """One benchmarked network: ``build()`` returns the callables and inputs."""

    name: str
    config: str
    input_shape: str
    build: Callable[[], dict]


# ----------------------------------------------------------------------------- helpers
def _state_items(module):
    return ((k, v.detach().cpu().numpy()) for k, v in module.state_dict().items())


def _fill_zero_params(module, seed=0):
    """Default init, except all-zero tensors (zero-init layers) get N(0, 0.02^2), so the
    output comparison cannot pass on zeros. Timing does not depend on it."""
    import torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return module.eval()


def _convert(module, keymap, init_fn, *init_args, dropped=()):
    import jax
    from convert.common import convert_to_tree
    target = jax.eval_shape(init_fn, jax.random.key(0), *init_args)
    if "params" in target:
        target = target["params"]
    tree = convert_to_tree(_state_items(module), keymap, target, dropped) if dropped else \
        convert_to_tree(_state_items(module), keymap, target)
    return {"params": jax.tree.map(jax.numpy.asarray, tree)}


def _shape(*arrays) -> str:
    return " ".join("x".join(map(str, a.shape)) for a in arrays)


# ----------------------------------------------------------------------------- cases
def sd_unet_case(full: bool) -> Case:
    from szero_jax.models import configs
    if full:
        cfg, size, ctx_len, label = configs.get("sd15_unet"), 64, 77, "sd15_unet (full)"
    else:
        cfg = configs.UNet2DConfig(block_out_channels=(64, 128, 256, 256), heads=(2, 4, 8, 8),
                                   cross_attention_dim=384)
        size, ctx_len = 32, 77
        label = "blocks 64-128-256-256, heads 2-4-8-8, ctx 384, 2 layers/block"
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, size, size, cfg.in_channels)).astype(np.float32)
    t = np.array([500.0, 500.0], np.float32)
    ctx = rng.standard_normal((2, ctx_len, cfg.cross_attention_dim)).astype(np.float32)

    def build():
        import jax
        import torch
        from diffusers import UNet2DConditionModel
        from szero_jax.models.unet2d import UNet2DCondition
        from szero_jax.models.unet_keymap import diffusers_unet_key
        down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cfg.cross_attn)
        up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.cross_attn))
        tm = _fill_zero_params(UNet2DConditionModel(
            sample_size=cfg.sample_size, in_channels=cfg.in_channels,
            out_channels=cfg.out_channels, down_block_types=down, up_block_types=up,
            block_out_channels=cfg.block_out_channels, layers_per_block=cfg.layers_per_block,
            attention_head_dim=cfg.heads, cross_attention_dim=cfg.cross_attention_dim,
            use_linear_projection=cfg.use_linear_projection, norm_eps=cfg.norm_eps,
            flip_sin_to_cos=cfg.flip_sin_to_cos, freq_shift=cfg.freq_shift))
        net = UNet2DCondition(cfg)
        params = _convert(tm, diffusers_unet_key, net.init, x, t, ctx)
        tx = (torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(t),
              torch.from_numpy(ctx))
        return dict(jax_fn=jax.jit(net.apply), jax_args=(params, x, t, ctx),
                    torch_module=tm, torch_fn=lambda m: m(*tx).sample.permute(0, 2, 3, 1))

    return Case("sd_unet2d", label, _shape(x, ctx), build)


def vae_case(full: bool) -> Case:
    from szero_jax.models import configs
    if full:
        cfg, size, label = configs.get("sd15_vae"), 64, "sd15_vae decode (full)"
    else:
        cfg = configs.VAEConfig(block_out_channels=(64, 128, 256, 256))
        size, label = 16, "decode, blocks 64-128-256-256, 2 layers/block"
    z = np.random.default_rng(1).standard_normal((1, size, size, cfg.latent_channels)).astype(np.float32)

    def build():
        import jax
        import torch
        from diffusers import AutoencoderKL
        from szero_jax.models import vae, vae_keymaps
        n = len(cfg.block_out_channels)
        tm = _fill_zero_params(AutoencoderKL(
            block_out_channels=list(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
            latent_channels=cfg.latent_channels, norm_num_groups=cfg.norm_num_groups,
            down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n))
        net = vae.AutoencoderKL(cfg)
        params = _convert(tm, vae_keymaps.diffusers_keymap(cfg), net.init,
                          np.zeros((1, 8 * size, 8 * size, 3), np.float32))
        tz = torch.from_numpy(z).permute(0, 3, 1, 2).contiguous()
        fn = jax.jit(lambda p, z: net.apply(p, z, method="decode"))
        return dict(jax_fn=fn, jax_args=(params, z), torch_module=tm,
                    torch_fn=lambda m: m.decode(tz).sample.permute(0, 2, 3, 1))

    return Case("vae_kl_decode", label, _shape(z) + f" -> {8 * size}x{8 * size}", build)


def temporal_vae_case(full: bool, full_frames: int) -> Case:
    from szero_jax.models import configs
    if full:
        cfg, size, frames = configs.get("svd_xt_vae"), 32, full_frames
        label = "svd_xt_vae decode (full)"
    else:
        cfg = configs.TemporalVAEConfig(block_out_channels=(64, 128, 256, 256))
        size, frames, label = 16, 4, "decode, blocks 64-128-256-256"
    z = np.random.default_rng(2).standard_normal((frames, size, size, cfg.latent_channels)).astype(np.float32)

    def build():
        import jax
        import torch
        from diffusers import AutoencoderKLTemporalDecoder
        from szero_jax.models import vae, vae_keymaps
        n = len(cfg.block_out_channels)
        tm = _fill_zero_params(AutoencoderKLTemporalDecoder(
            block_out_channels=list(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
            latent_channels=cfg.latent_channels, down_block_types=["DownEncoderBlock2D"] * n))
        net = vae.AutoencoderKLTemporalDecoder(cfg)
        params = _convert(tm, vae_keymaps.temporal_keymap(cfg),
                          lambda k, x: net.init(k, x, frames),  # num_frames is static
                          np.zeros((frames, 8 * size, 8 * size, 3), np.float32))
        tz = torch.from_numpy(z).permute(0, 3, 1, 2).contiguous()
        fn = jax.jit(lambda p, z: net.apply(p, z, frames, method="decode"))
        return dict(jax_fn=fn, jax_args=(params, z), torch_module=tm,
                    torch_fn=lambda m: m.decode(tz, num_frames=frames).sample.permute(0, 2, 3, 1))

    return Case("vae_temporal_decode", label,
                _shape(z) + f" -> {8 * size}x{8 * size}, T={frames}", build)


def clip_text_case(full: bool) -> Case:
    from szero_jax.models import configs
    if full:
        cfg, label = configs.get("sd15_text_encoder"), "sd15_text_encoder, CLIP ViT-L/14 (full)"
    else:
        cfg = configs.CLIPTextConfig(width=384, layers=12, heads=6, mlp_dim=1536,
                                     activation="quick_gelu", projection_dim=None)
        label = "width 384, 12 layers, 6 heads"
    rng = np.random.default_rng(3)
    ids = rng.integers(1, 49406, size=(2, cfg.context_length)).astype(np.int32)
    ids[:, 0], ids[:, 20], ids[:, 21:] = 49406, 49407, 49407  # BOS ... EOS, EOS padding

    def build():
        import jax
        import torch
        import transformers
        from szero_jax.models import clip, clip_keymaps
        hf = transformers.CLIPTextConfig(
            vocab_size=cfg.vocab_size, hidden_size=cfg.width, intermediate_size=cfg.mlp_dim,
            num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
            max_position_embeddings=cfg.context_length, hidden_act=cfg.activation,
            eos_token_id=2 if cfg.eos_token_id is None else cfg.eos_token_id)
        tm = _fill_zero_params(transformers.CLIPTextModel(hf))
        net = clip.CLIPTextEncoder(cfg)
        params = _convert(tm, clip_keymaps.hf_text_keymap(), net.init, ids)
        tid = torch.from_numpy(ids.astype(np.int64))
        return dict(jax_fn=jax.jit(lambda p, i: net.apply(p, i)[0]), jax_args=(params, ids),
                    torch_module=tm, torch_fn=lambda m: m(tid).last_hidden_state)

    return Case("clip_text", label, _shape(ids), build)


def clip_vision_case(full: bool) -> Case:
    from szero_jax.models import configs
    if full:
        cfg, label = configs.get("svd_xt_image_encoder"), "svd_xt_image_encoder, ViT-H/14 (full)"
    else:
        cfg = configs.CLIPVisionConfig(width=384, layers=12, heads=6, mlp_dim=1536,
                                       projection_dim=256)
        label = "ViT patch 14, width 384, 12 layers"
    px = np.random.default_rng(4).standard_normal((1, cfg.image_size, cfg.image_size, 3)).astype(np.float32)

    def build():
        import jax
        import torch
        import transformers
        from szero_jax.models import clip, clip_keymaps
        hf = transformers.CLIPVisionConfig(
            hidden_size=cfg.width, intermediate_size=cfg.mlp_dim, num_hidden_layers=cfg.layers,
            num_attention_heads=cfg.heads, image_size=cfg.image_size, patch_size=cfg.patch_size,
            projection_dim=cfg.projection_dim, hidden_act=cfg.activation)
        tm = _fill_zero_params(transformers.CLIPVisionModelWithProjection(hf))
        net = clip.CLIPVisionEncoder(cfg)
        params = _convert(tm, clip_keymaps.hf_vision_keymap(), net.init, px)
        tpx = torch.from_numpy(px).permute(0, 3, 1, 2).contiguous()
        return dict(jax_fn=jax.jit(lambda p, x: net.apply(p, x)[0]), jax_args=(params, px),
                    torch_module=tm, torch_fn=lambda m: m(tpx).last_hidden_state)

    return Case("clip_vision", label, _shape(px), build)


def svd_unet_case(full: bool, full_frames: int) -> Case:
    from szero_jax.models import configs
    if full:
        cfg, (h, w), frames = configs.get("depthcrafter_unet"), (40, 64), full_frames
        label = "depthcrafter_unet (full)"
    else:
        cfg = configs.UNetSTConfig(block_out_channels=(64, 128, 256, 256), heads=(2, 4, 8, 8),
                                   cross_attention_dim=256)
        (h, w), frames = (32, 32), 4
        label = "blocks 64-128-256-256, heads 2-4-8-8, ctx 256"
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, frames, h, w, cfg.in_channels)).astype(np.float32)
    t = np.array([1.5], np.float32)
    # One CLIP token per frame (DepthCrafter). The diffusers SVD UNet repeats one token over
    # the frames, so the benchmark gives every frame the same token: same math, same cost.
    tok = rng.standard_normal((1, 1, cfg.cross_attention_dim)).astype(np.float32)
    ctx = np.repeat(tok, frames, axis=1)
    ids = np.array([[cfg.fps, cfg.motion_bucket_id, cfg.noise_aug_strength]], np.float32)

    def build():
        import jax
        import torch
        from diffusers import UNetSpatioTemporalConditionModel
        from szero_jax.models.unet_keymap import diffusers_unet_key
        from szero_jax.models.unet_st import UNetSpatioTemporal
        down = tuple("CrossAttnDownBlockSpatioTemporal" if a else "DownBlockSpatioTemporal"
                     for a in cfg.cross_attn)
        up = tuple("CrossAttnUpBlockSpatioTemporal" if a else "UpBlockSpatioTemporal"
                   for a in reversed(cfg.cross_attn))
        tm = _fill_zero_params(UNetSpatioTemporalConditionModel(
            in_channels=cfg.in_channels, out_channels=cfg.out_channels, down_block_types=down,
            up_block_types=up, block_out_channels=cfg.block_out_channels,
            addition_time_embed_dim=cfg.addition_time_embed_dim,
            projection_class_embeddings_input_dim=cfg.num_time_ids * cfg.addition_time_embed_dim,
            layers_per_block=cfg.layers_per_block, cross_attention_dim=cfg.cross_attention_dim,
            transformer_layers_per_block=cfg.transformer_layers_per_block,
            num_attention_heads=cfg.heads, num_frames=cfg.num_frames))
        net = UNetSpatioTemporal(cfg)
        params = _convert(tm, diffusers_unet_key, net.init, x, t, ctx, ids)
        tx = (torch.from_numpy(x).permute(0, 1, 4, 2, 3).contiguous(), torch.from_numpy(t),
              torch.from_numpy(tok), torch.from_numpy(ids))
        return dict(jax_fn=jax.jit(net.apply), jax_args=(params, x, t, ctx, ids), torch_module=tm,
                    torch_fn=lambda m: m(*tx).sample.permute(0, 1, 3, 4, 2))

    return Case("svd_unet_st", label, _shape(x, ctx) + f", T={frames}", build)


def unet3d_case(full: bool, full_frames: int) -> Case:
    from szero_jax.models import configs
    if full:
        cfg, (h, w), frames = configs.get("dynamicrafter_512").unet, (40, 64), full_frames
        label = "dynamicrafter_512 UNet (full)"
    else:
        cfg = configs.DynamiCrafterUNetConfig(model_channels=64, num_head_channels=32,
                                              context_dim=256, temporal_length=4)
        (h, w), frames = (32, 32), 4
        label = "model_channels 64, mult 1-2-4-4, head 32, ctx 256"
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, frames, h, w, cfg.in_channels)).astype(np.float32)
    ctx = rng.standard_normal((1, cfg.text_context_len + cfg.image_tokens_per_frame * frames,
                               cfg.context_dim)).astype(np.float32)
    t, fs = np.array([500], np.int32), np.array([cfg.default_fs], np.int32)

    def build():
        import jax
        from szero_jax.models.unet3d import UNet3D
        net = UNet3D(cfg)
        params = jax.jit(net.init)(jax.random.key(0), x, t, ctx, fs)
        return dict(jax_fn=jax.jit(net.apply), jax_args=(params, x, t, ctx, fs))

    return Case("dc_unet3d", label, _shape(x, ctx) + f", T={frames}", build)


def resampler_case(full: bool) -> Case:
    from szero_jax.models import configs
    if full:
        cfg, label = configs.get("dynamicrafter_512").resampler, "dynamicrafter_512 (full)"
    else:
        cfg = configs.ResamplerConfig(dim=256, depth=4, dim_head=32, heads=8, embedding_dim=384,
                                      output_dim=256, video_length=4)
        label = "dim 256, depth 4, 16 queries x 4 frames"
    x = np.random.default_rng(7).standard_normal((1, 257, cfg.embedding_dim)).astype(np.float32)

    def build():
        import jax
        from szero_jax.models.resampler import Resampler
        net = Resampler(cfg)
        params = jax.jit(net.init)(jax.random.key(0), x)
        return dict(jax_fn=jax.jit(net.apply), jax_args=(params, x))

    return Case("dc_resampler", label, _shape(x), build)


def all_cases(full: bool, reduced: bool, full_frames: int) -> list[Case]:
    out = []
    for f in ([False] if reduced else []) + ([True] if full else []):
        out += [sd_unet_case(f), vae_case(f), clip_text_case(f), clip_vision_case(f),
                svd_unet_case(f, full_frames), temporal_vae_case(f, full_frames),
                unet3d_case(f, full_frames), resampler_case(f)]
    return out


# ----------------------------------------------------------------------------- attention paths
def tiny_family_cases() -> list[tuple[str, str, Callable, tuple]]:
    """(name, input shape, fn, args) for each tiny-family network at the demo's sizes."""
    import jax
    import jax.numpy as jnp
    from szero_jax import tiny
    from szero_jax.models import clip, resampler, unet3d, unet_st, vae
    from szero_jax.models.attention import cross_view_index
    rng = np.random.default_rng(0)
    rand = lambda *shape: rng.standard_normal(shape).astype(np.float32)
    lat_h, lat_w, t = tiny.HEIGHT // 4, tiny.WIDTH // 4, tiny.FRAMES
    cases = []

    def add(name, net, init_args, call=None, method=None, extra=()):
        params = jax.jit(net.init)(jax.random.key(0), *init_args)
        fn = (lambda p, *a: net.apply(p, *a, method=method)) if method else net.apply
        shown = [a for a in (call or init_args) if getattr(a, "ndim", 0)]
        cases.append((name, _shape(*shown),
                      jax.jit(fn), (params,) + tuple(call or init_args) + tuple(extra)))

    vcfg = tiny.VAE
    ae = vae.AutoencoderKL(vcfg)
    add("tiny_vae_decode", ae, (rand(2 * t, tiny.HEIGHT, tiny.WIDTH, 3),),
        call=(rand(2 * t, lat_h, lat_w, vcfg.latent_channels),), method="decode")
    text = clip.CLIPTextEncoder(tiny.TEXT)
    add("tiny_text_encoder", text, (rng.integers(1, 30, (2, tiny.TEXT.context_length)),))
    vision = clip.CLIPVisionEncoder(tiny.VISION)
    add("tiny_image_encoder", vision, (rand(2, tiny.CLIP_IMAGE_SIZE, tiny.CLIP_IMAGE_SIZE, 3),))
    rs = resampler.Resampler(tiny.RESAMPLER)
    n_tokens = (tiny.CLIP_IMAGE_SIZE // tiny.VISION.patch_size) ** 2 + 1
    add("tiny_resampler", rs, (rand(2, n_tokens, tiny.RESAMPLER.embedding_dim),))
    ucfg = tiny.VIDEO_UNET
    x = rand(4, t, lat_h, lat_w, ucfg.in_channels)  # 2 views x CFG halves
    ctx = rand(4, ucfg.text_context_len + ucfg.image_tokens_per_frame * t, ucfg.context_dim)
    ts, fs = np.full((4,), 500, np.int32), np.full((4,), ucfg.default_fs, np.int32)
    add("tiny_video_unet_stereo", unet3d.UNet3D(ucfg), (x, ts, ctx, fs),
        extra=(jnp.int32(cross_view_index("uni_query")),))
    dcfg = tiny.DEPTH_UNET
    add("tiny_depth_unet", unet_st.UNetSpatioTemporal(dcfg),
        (rand(1, t, lat_h, lat_w, dcfg.in_channels), np.array([1.5], np.float32),
         rand(1, t, dcfg.cross_attention_dim)))
    return cases


def attention_ratio_rows(repeats: int) -> list[dict]:
    import jax
    from szero_jax.models.attention import LEGACY, attention_settings, current_attention_settings
    new = current_attention_settings()
    rows = []
    for name, shape, fn, args in tiny_family_cases():
        runs = {}
        for label, settings in (("new", new), ("old", LEGACY)):
            def run(settings=settings):
                with attention_settings(settings):
                    start = time.perf_counter()
                    jax.block_until_ready(fn(*args))
                    return time.perf_counter() - start
            run(), run()  # compile, warm up
            runs[label] = run
        times = {k: [] for k in runs}
        for _ in range(max(repeats, 3)):  # interleaved: background load hits both alike
            for k, r in runs.items():
                times[k].append(r())
        with attention_settings(LEGACY):
            ref = [np.asarray(a, np.float32) for a in jax.tree.leaves(fn(*args))]
        with attention_settings(new):
            out = [np.asarray(a, np.float32) for a in jax.tree.leaves(fn(*args))]
        err = max(float(np.abs(o - r).max() / max(np.abs(r).max(), 1e-30))
                  for o, r in zip(out, ref))
        row = dict(network=name, input_shape=shape,
                   new_ms=1e3 * float(np.median(times["new"])),
                   old_ms=1e3 * float(np.median(times["old"])), rel_err=err)
        row["new_over_old"] = row["new_ms"] / row["old_ms"]
        rows.append(row)
        print("    " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                 for k, v in row.items()), flush=True)
    return rows


# ----------------------------------------------------------------------------- timing
def _run_case(case: Case, repeats: int, budget_s: float, torch_compile: bool) -> dict:
    import jax
    import torch

    built = case.build()
    jfn, jargs = built["jax_fn"], built["jax_args"]
    jargs = jax.device_put(jargs)
    t0 = time.perf_counter()
    jax_out = jax.block_until_ready(jfn(*jargs))  # compile + first run
    compile_s = time.perf_counter() - t0

    def run_jax():
        start, cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(jfn(*jargs))
        return time.perf_counter() - start, time.process_time() - cpu

    runners = {"jax": run_jax}
    row: dict[str, Any] = dict(network=case.name, config=case.config, input_shape=case.input_shape,
                               jax_compile_s=compile_s)
    tm = built.get("torch_module")
    if tm is not None:
        tfn = built["torch_fn"]

        def make_torch(module):
            def run():
                with torch.inference_mode():
                    start, cpu = time.perf_counter(), time.process_time()
                    tfn(module)
                    return time.perf_counter() - start, time.process_time() - cpu
            return run

        with torch.inference_mode():
            ref = tfn(tm).float().numpy()
        out = np.asarray(jax_out, np.float32)
        row["rel_err"] = float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-30))
        runners["torch"] = make_torch(tm)
        if torch_compile:
            t0 = time.perf_counter()
            compiled = torch.compile(tm)
            with torch.inference_mode():
                tfn(compiled)
            row["torch_compile_s"] = time.perf_counter() - t0
            runners["torch_compile"] = make_torch(compiled)

    # Warm-up every runner once more, then size the repeats to the budget.
    first = {k: r()[0] for k, r in runners.items()}
    per_round = sum(first.values())
    n = int(max(3, min(repeats, budget_s // max(per_round, 1e-9))))
    times = {k: [] for k in runners}
    for _ in range(n):  # interleaved: background load hits every framework alike
        for k, r in runners.items():
            times[k].append(r())
    row["repeats"] = n
    for k, ts in times.items():
        wall, cpu = np.array(ts).T
        row[f"{k}_ms"] = 1e3 * float(np.median(wall))
        row[f"{k}_min_ms"] = 1e3 * float(np.min(wall))
        row[f"{k}_cpu_ms"] = 1e3 * float(np.median(cpu))
    if "torch_ms" in row:
        row["torch_over_jax"] = row["torch_ms"] / row["jax_ms"]
        row["torch_over_jax_cpu"] = row["torch_cpu_ms"] / row["jax_cpu_ms"]
    if "torch_compile_ms" in row:
        row["torch_compile_over_jax"] = row["torch_compile_ms"] / row["jax_ms"]
    return row


def _table(rows: list[dict], with_compile: bool) -> str:
    head = ["network", "config", "input shape", "JAX ms", "torch ms", "torch/jax",
            "CPU torch/jax", "rel err"]
    if with_compile:
        head += ["compile ms", "compile/jax"]
    lines = []
    for r in rows:
        f = lambda k, fmt: (fmt % r[k]) if k in r else "-"
        line = [r["network"], r["config"], r["input_shape"], f("jax_ms", "%.1f"),
                f("torch_ms", "%.1f") if "torch_ms" in r else "n/a (no torch module)",
                f("torch_over_jax", "%.2f"), f("torch_over_jax_cpu", "%.2f"), f("rel_err", "%.1e")]
        if with_compile:
            line += [f("torch_compile_ms", "%.1f"), f("torch_compile_over_jax", "%.2f")]
        lines.append(line)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    fmt = lambda cells: " | ".join(str(c).ljust(w) for c, w in zip(cells, widths))
    return "\n".join([fmt(head), "-+-".join("-" * w for w in widths)] + [fmt(l) for l in lines])


def _pin_threads(threads: int) -> int:
    """Pin to ``threads`` CPUs (before JAX is imported) and return the thread count used."""
    cpus = sorted(os.sched_getaffinity(0))
    if threads <= 0 or threads >= len(cpus):
        return len(cpus)
    os.sched_setaffinity(0, cpus[:threads])
    return threads


def main(argv):
    del argv
    threads = _pin_threads(FLAGS.threads)
    if FLAGS.omp_passive:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch loads libgomp
    import jax  # after pinning: XLA sizes its CPU thread pool from the schedulable CPUs
    import torch
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.set_flush_denormal(True)

    if FLAGS.attention_ratio:
        from szero_jax.models.attention import current_attention_settings
        print(f"attention: {current_attention_settings()} vs LEGACY; threads {threads}; "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        rows = attention_ratio_rows(FLAGS.repeats)
        print("\nnetwork | input | new ms | old ms | new/old | rel err")
        for r in rows:
            print(f"{r['network']} | {r['input_shape']} | {r['new_ms']:.1f} | {r['old_ms']:.1f} | "
                  f"{r['new_over_old']:.2f} | {r['rel_err']:.1e}")
        if FLAGS.output_json:
            _write_json(FLAGS.output_json, dict(rows=rows))
        return
    cases = all_cases(FLAGS.full, FLAGS.reduced, FLAGS.full_frames)
    if FLAGS.only:
        cases = [c for c in cases if any(c.name.startswith(o) for o in FLAGS.only)]
    meta = dict(threads=threads, omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", ""), torch_num_threads=torch.get_num_threads(),
                jax=jax.__version__, torch=torch.__version__, jax_backend=jax.default_backend(),
                cpu=platform.processor() or platform.machine(),
                loadavg_start=os.getloadavg(), repeats=FLAGS.repeats)
    print(f"threads: {threads} (XLA pool: schedulable CPUs; torch.set_num_threads({threads}), "
          f"interop 1; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}); jax {jax.__version__}, torch {torch.__version__}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for case in cases:
        print(f"... {case.name}: {case.config}", flush=True)
        try:
            row = _run_case(case, FLAGS.repeats, FLAGS.budget_s, FLAGS.torch_compile)
        except Exception as e:  # report and go on: one broken network must not hide the rest
            row = dict(network=case.name, config=case.config, input_shape=case.input_shape,
                       error=f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
        row["full"] = "(full)" in case.config
        rows.append(row)
        print("    " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                 for k, v in row.items() if k not in ("network", "config")),
              flush=True)
    meta["loadavg_end"] = os.getloadavg()
    print()
    print(_table(rows, FLAGS.torch_compile))
    print("torch/jax > 1: Flax is faster. Medians of interleaved runs (wall clock; CPU: the "
          "process's CPU time per call, all threads, steadier on a shared machine); rel err = "
          "max|jax - torch| / max|torch| (same weights).")
    if FLAGS.output_json:
        _write_json(FLAGS.output_json, dict(meta=meta, rows=rows))


def _write_json(path, obj):
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2))
    print(f"wrote {os.path.abspath(path)}")


if __name__ == "__main__":
    cf.set_defaults(repeats=7)
    sys.exit(app.run(main))
