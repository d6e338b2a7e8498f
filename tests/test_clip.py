"""CLIP towers: parity with OpenCLIP (fixture) and transformers (random tiny models)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file

from convert import common, openclip
from szero_jax.models import clip, configs
from szero_jax.models import clip_keymaps as km

TOL = 1e-4  # max abs error relative to the output's max abs value (issue 3)


def assert_close(ours, ref):
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape
    err = np.abs(ours - ref).max()
    assert err <= TOL * np.abs(ref).max(), (err, np.abs(ref).max())


def _text_shapes(cfg):
    return jax.eval_shape(clip.CLIPTextEncoder(cfg).init, jax.random.key(0),
                          jnp.zeros((1, cfg.context_length), jnp.int32))


def _vision_shapes(cfg):
    s = cfg.image_size
    return jax.eval_shape(clip.CLIPVisionEncoder(cfg).init, jax.random.key(0),
                          jnp.zeros((1, s, s, 3)))


# ----------------------------------------------------------------------------- OpenCLIP fixture
def _openclip_tiny_configs(fixtures_dir):
    cfg = json.loads((fixtures_dir / "dynamicrafter" / "openclip_tiny_config.json").read_text())
    return openclip.configs_from_openclip_json(cfg)


def test_openclip_fixture_parity(fixtures_dir):
    d = fixtures_dir / "dynamicrafter"
    text_cfg, vision_cfg = _openclip_tiny_configs(fixtures_dir)
    sd = load_file(str(d / "openclip_tiny.safetensors"))
    io = np.load(d / "openclip_tiny_io.npz")

    tp = common.convert_to_tree(sd.items(), km.openclip_text_keymap(), _text_shapes(text_cfg),
                                km.openclip_text_dropped())
    _, penultimate, _ = jax.jit(clip.CLIPTextEncoder(text_cfg).apply)(
        {"params": tp}, jnp.asarray(io["tokens"], jnp.int32))
    assert_close(penultimate, io["text_penultimate"])

    vp = common.convert_to_tree(sd.items(), km.openclip_vision_keymap(),
                                _vision_shapes(vision_cfg), km.openclip_vision_dropped())
    tokens, _ = jax.jit(clip.CLIPVisionEncoder(vision_cfg).apply)(
        {"params": vp}, jnp.asarray(io["image"].transpose(0, 2, 3, 1)))
    assert_close(tokens, io["image_tokens"])


# ----------------------------------------------------------------------------- transformers
def _randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.2
            p.copy_(1.0 + noise * 0.5 if "norm" in name and name.endswith("weight") else noise)
    return model.eval()


def _np_state(model):
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("act,eos,projection", [("quick_gelu", 2, None), ("gelu", 49, 24)])
def test_hf_text_parity(act, eos, projection):
    hf_cfg = transformers.CLIPTextConfig(
        vocab_size=50, hidden_size=32, intermediate_size=80, num_hidden_layers=3,
        num_attention_heads=4, max_position_embeddings=16, hidden_act=act,
        projection_dim=projection or 16, eos_token_id=eos, bos_token_id=48, pad_token_id=0)
    cls = transformers.CLIPTextModelWithProjection if projection else transformers.CLIPTextModel
    model = _randomise(cls(hf_cfg), seed=1)
    cfg = configs.CLIPTextConfig(
        vocab_size=50, context_length=16, width=32, layers=3, heads=4, mlp_dim=80,
        activation=act, projection_dim=projection, eos_token_id=None if eos == 2 else eos)
    params = common.convert_to_tree(_np_state(model).items(), km.hf_text_keymap(),
                                    _text_shapes(cfg))

    rng = np.random.default_rng(0)
    ids = rng.integers(1, 48, size=(2, 12))
    ids[:, 0] = 48
    ids[0, 7], ids[0, 8:] = 49, 0  # EOS then padding
    ids[1, 11] = 49
    with torch.no_grad():
        out = model(torch.as_tensor(ids), output_hidden_states=True)
        inner = model.text_model if projection else model
        penultimate = inner.final_layer_norm(out.hidden_states[-2]).numpy()
    last, pen, pooled = jax.jit(clip.CLIPTextEncoder(cfg).apply)({"params": params},
                                                         jnp.asarray(ids, jnp.int32))
    assert_close(last, out.last_hidden_state.numpy())
    assert_close(pen, penultimate)
    assert_close(pooled, (out.text_embeds if projection else out.pooler_output).numpy())


def test_hf_vision_parity():
    hf_cfg = transformers.CLIPVisionConfig(
        hidden_size=32, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        image_size=24, patch_size=8, projection_dim=20, hidden_act="gelu")
    model = _randomise(transformers.CLIPVisionModelWithProjection(hf_cfg), seed=2)
    cfg = configs.CLIPVisionConfig(image_size=24, patch_size=8, width=32, layers=2, heads=4,
                                   mlp_dim=96, projection_dim=20)
    params = common.convert_to_tree(_np_state(model).items(), km.hf_vision_keymap(),
                                    _vision_shapes(cfg))
    pixels = np.random.default_rng(1).normal(size=(2, 3, 24, 24)).astype(np.float32)
    with torch.no_grad():
        out = model(torch.as_tensor(pixels))
    tokens, embeds = jax.jit(clip.CLIPVisionEncoder(cfg).apply)({"params": params},
                                                       jnp.asarray(pixels.transpose(0, 2, 3, 1)))
    assert_close(tokens, out.last_hidden_state.numpy())
    assert_close(embeds, out.image_embeds.numpy())


# ----------------------------------------------------------------------------- full-size keys
def test_dynamicrafter_512_clip_keys_map(fixtures_dir):
    listing = json.loads((fixtures_dir / "dynamicrafter" /
                          "dynamicrafter_512_key_shapes.json").read_text())
    for prefix, keymap, dropped, shapes in (
            ("cond_stage_model.model.", km.openclip_text_keymap, km.openclip_text_dropped,
             _text_shapes(configs.get("openclip_vit_h14_text"))),
            ("embedder.model.", km.openclip_vision_keymap, km.openclip_vision_dropped,
             _vision_shapes(configs.get("openclip_vit_h14_vision")))):
        keys = {k: s for k, s in listing.items() if k.startswith(prefix)}
        filled = common.check_keymap(keys, keymap(prefix), shapes, dropped(prefix))
        assert filled == len(common.target_shapes(shapes))
        kept = [k for k in keys if not any(d.search(k) for d in dropped(prefix))]
        # every in_proj tensor fills three params, every other kept tensor one
        n_packed = sum("in_proj" in k for k in kept)
        assert filled == len(kept) + 2 * n_packed
    # the text tower drops only logit_scale; the vision tower also the unused text parts
    dropped_text = [k for k in listing if k.startswith("cond_stage_model.model.")
                    and km.openclip_text_dropped("cond_stage_model.model.")[0].search(k)]
    assert dropped_text == ["cond_stage_model.model.logit_scale"]


def _hf_meta_state_shapes(cls, hf_cfg):
    with torch.device("meta"):
        model = cls(hf_cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name,hf_kwargs", [
    # sd-v1-5 text_encoder/config.json (CLIP ViT-L/14)
    ("sd15_text_encoder", dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                               num_attention_heads=12, hidden_act="quick_gelu",
                               projection_dim=768)),
    # sd-2-1 text_encoder/config.json (OpenCLIP ViT-H text, 23 of 24 blocks)
    ("sd2_text_encoder", dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                              num_attention_heads=16, hidden_act="gelu", projection_dim=512)),
])
def test_hf_full_text_configs_map(name, hf_kwargs):
    keys = _hf_meta_state_shapes(transformers.CLIPTextModel,
                                 transformers.CLIPTextConfig(**hf_kwargs))
    shapes = _text_shapes(configs.get(name))
    assert common.check_keymap(keys, km.hf_text_keymap(), shapes) == len(
        common.target_shapes(shapes))


def test_hf_full_svd_image_encoder_maps():
    # SVD-xt image_encoder/config.json: ViT-H/14, projection 1024
    hf_cfg = transformers.CLIPVisionConfig(
        hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
        image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu")
    keys = _hf_meta_state_shapes(transformers.CLIPVisionModelWithProjection, hf_cfg)
    shapes = _vision_shapes(configs.get("svd_xt_image_encoder"))
    assert common.check_keymap(keys, km.hf_vision_keymap(), shapes) == len(
        common.target_shapes(shapes))


def test_unmapped_key_is_reported():
    cfg = configs.CLIPTextConfig(vocab_size=10, context_length=4, width=8, layers=1, heads=2,
                                 mlp_dim=16, projection_dim=None)
    shapes = common.target_shapes(_text_shapes(cfg))
    keys = {"transformer.resblocks.0.attn.in_proj_weight": (24, 8), "surprise.weight": (3,)}
    with pytest.raises(common.ConversionError, match="surprise.weight"):
        common.check_keymap(keys, km.openclip_text_keymap(), shapes)


# ----------------------------------------------------------------------------- preprocessing
def _torch_preprocess(images_nchw, size):
    """kornia.geometry.resize(bicubic, align_corners=True, antialias=True) + CLIP normalise."""
    x = torch.as_tensor(images_nchw, dtype=torch.float64)
    h, w = x.shape[-2:]
    if max(h / size, w / size) > 1:
        for axis, n in ((-2, h), (-1, w)):
            sigma = max((n / size - 1.0) / 2.0, 0.001)
            ks = int(max(4.0 * sigma, 3))
            ks += 1 - ks % 2
            t = torch.arange(ks, dtype=torch.float64) - ks // 2
            k = torch.exp(-t ** 2 / (2 * sigma ** 2))
            k = (k / k.sum()).repeat(3, 1, 1)
            if axis == -2:
                xp = torch.nn.functional.pad(x, (0, 0, ks // 2, ks // 2), mode="reflect")
                x = torch.nn.functional.conv2d(xp, k[:, :, :, None], groups=3)
            else:
                xp = torch.nn.functional.pad(x, (ks // 2, ks // 2, 0, 0), mode="reflect")
                x = torch.nn.functional.conv2d(xp, k[:, :, None, :], groups=3)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=True)
    x = (x + 1) / 2
    mean = torch.tensor(clip.CLIP_MEAN, dtype=torch.float64)[:, None, None]
    std = torch.tensor(clip.CLIP_STD, dtype=torch.float64)[:, None, None]
    return ((x - mean) / std).numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("h,w,size", [(40, 64, 24), (16, 20, 24)])
def test_preprocess_matches_torch(h, w, size):
    images = np.random.default_rng(3).uniform(-1, 1, size=(2, h, w, 3)).astype(np.float32)
    ours = clip.preprocess_image(images, size=size)
    assert_close(ours, _torch_preprocess(images.transpose(0, 3, 1, 2), size))


def test_bad_inputs_raise():
    cfg = configs.CLIPVisionConfig(image_size=16, patch_size=8, width=8, layers=1, heads=2,
                                   mlp_dim=16, projection_dim=None)
    with pytest.raises(ValueError, match="pixels"):
        clip.CLIPVisionEncoder(cfg).init(jax.random.key(0), jnp.zeros((1, 3, 16, 16)))
    tcfg = configs.CLIPTextConfig(vocab_size=10, context_length=4, width=8, layers=1, heads=2,
                                  mlp_dim=16)
    with pytest.raises(ValueError, match="tokens"):
        clip.CLIPTextEncoder(tcfg).init(jax.random.key(0), jnp.zeros((1, 5), jnp.int32))
    with pytest.raises(ValueError, match="images"):
        clip.preprocess_image(np.zeros((1, 3, 8, 8)))
    with pytest.raises(ValueError, match="activation"):
        configs.CLIPTextConfig(activation="relu")
