"""convert/openclip.py: fixture weights -> checkpoints that reproduce the fixture outputs."""
import json
import pickle
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from convert import common
from convert import openclip as conv
from szero_jax import checkpoints
from szero_jax.models import clip, configs


@pytest.fixture
def tiny(fixtures_dir, tmp_path):
    d = fixtures_dir / "dynamicrafter"
    bpe = tmp_path / conv.BPE_FILE
    bpe.write_bytes(b"stand-in")  # only copied by the converter, never parsed here
    return d, bpe


def _check_outputs(out, d):
    io = np.load(d / "openclip_tiny_io.npz")
    tp, tcfg = checkpoints.load_params(out / "text", "clip_text")
    vp, vcfg = checkpoints.load_params(out / "vision", "clip_vision")
    _, pen, _ = jax.jit(clip.CLIPTextEncoder(tcfg).apply)({"params": tp}, jnp.asarray(io["tokens"], jnp.int32))
    tokens, _ = jax.jit(clip.CLIPVisionEncoder(vcfg).apply)(
        {"params": vp}, jnp.asarray(io["image"].transpose(0, 2, 3, 1)))
    for ours, ref in ((pen, io["text_penultimate"]), (tokens, io["image_tokens"])):
        assert np.abs(np.asarray(ours) - ref).max() <= 1e-4 * np.abs(ref).max()
    assert (out / "tokenizer" / conv.BPE_FILE).read_bytes() == b"stand-in"


def test_convert_safetensors_roundtrip(tiny, tmp_path):
    d, bpe = tiny
    out = tmp_path / "out"
    assert conv.run(str(d / "openclip_tiny.safetensors"), str(out),
                    model_config=str(d / "openclip_tiny_config.json"),
                    bpe_vocab=str(bpe)) == [out / "text", out / "vision"]
    _check_outputs(out, d)
    with pytest.raises(ValueError, match="output_dir"):
        conv.run(str(d / "openclip_tiny.safetensors"), str(out),
                 model_config=str(d / "openclip_tiny_config.json"), bpe_vocab=str(bpe))


def test_convert_torch_bin_and_problems_listed(tiny, tmp_path):
    d, bpe = tiny
    sd = {k: torch.as_tensor(v) for k, v in load_file(str(d / "openclip_tiny.safetensors")).items()}
    good = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(sd, good)
    cfgs = conv.configs_from_openclip_json(json.loads((d / "openclip_tiny_config.json").read_text()))
    from_bin = conv.convert(common.load_state_dict(good), *cfgs)
    from_st = conv.convert(common.load_state_dict(d / "openclip_tiny.safetensors"), *cfgs)
    for a, b in zip(from_bin, from_st):
        flat_a, flat_b = common.flatten(a), common.flatten(b)
        assert flat_a.keys() == flat_b.keys()
        assert all(np.array_equal(flat_a[k], flat_b[k]) for k in flat_a)

    broken = dict(sd)
    del broken["transformer.resblocks.1.mlp.c_fc.bias"]
    broken["visual.extra_thing"] = torch.zeros(3)
    broken["ln_final.weight"] = torch.zeros(5)
    torch.save(broken, tmp_path / "broken.bin")
    with pytest.raises(common.ConversionError) as err:
        conv.run(str(tmp_path / "broken.bin"), str(tmp_path / "out2"),
                 str(d / "openclip_tiny_config.json"), str(bpe))
    msg = str(err.value)
    assert "visual.extra_thing" in msg and "blocks_1/fc1/bias" in msg and "ln_final.weight" in msg


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_malicious_pickle_refused(tiny, tmp_path):
    d, bpe = tiny
    bad = tmp_path / "evil.bin"
    torch.save({"x": _Evil()}, bad, pickle_module=pickle)
    with pytest.raises(ValueError, match="refused"):
        conv.run(str(bad), str(tmp_path / "out"), str(d / "openclip_tiny_config.json"), str(bpe))


def test_configs_from_openclip_json_vit_h14():
    vit_h = {"embed_dim": 1024,  # open_clip model_configs/ViT-H-14.json
             "vision_cfg": {"image_size": 224, "layers": 32, "width": 1280, "head_width": 80,
                            "patch_size": 14},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16,
                          "layers": 24}}
    text, vision = conv.configs_from_openclip_json(vit_h)
    assert text == configs.get("openclip_vit_h14_text")
    assert vision == configs.get("openclip_vit_h14_vision")
    with pytest.raises(ValueError, match="model_config"):
        conv.configs_from_openclip_json({"embed_dim": 8})
    with pytest.raises(ValueError, match="attentional_pool"):
        conv.configs_from_openclip_json(dict(vit_h, vision_cfg={"attentional_pool": True}))


@pytest.mark.slow
def test_script_usage_error():
    r = subprocess.run([sys.executable, "-m", "convert.openclip"], capture_output=True, text=True,
                       cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    assert r.returncode != 0 and "--checkpoint and --output_dir are required" in r.stderr
