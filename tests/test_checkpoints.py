"""szero_jax.checkpoints: params file + JSON config round trip, streamed writes, dtype on
load, the legacy orbax format, and the errors."""
import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest

from szero_jax import checkpoints


def _params():
    return {"enc": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3),
                    "bias": np.full((3,), 0.5, np.float32)},
            "scale": jnp.asarray([2.0, -1.0])}


def test_round_trip_dict_config(tmp_path):
    cfg = {"channels": [32, 64], "name": "tiny", "eps": 1e-6}
    out = checkpoints.save_params(tmp_path / "ck", _params(), cfg, family="vae")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "params.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp dir renamed
    params, config = checkpoints.load_params(out, expected_family="vae")
    assert config == cfg
    np.testing.assert_array_equal(params["enc"]["kernel"], np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(params["enc"]["bias"], [0.5] * 3)
    np.testing.assert_array_equal(params["scale"], [2.0, -1.0])
    assert params["scale"].dtype == jnp.float32


@dataclasses.dataclass(frozen=True)
class _Inner:
    widths: tuple = (1, 2)


@dataclasses.dataclass(frozen=True)
class _Outer:
    inner: _Inner = _Inner()
    depth: int = 3


def test_round_trip_nested_dataclass_config(tmp_path, monkeypatch):
    import szero_jax.models as models_pkg
    fake = type("configs", (), {"_Inner": _Inner, "_Outer": _Outer})
    monkeypatch.setattr(models_pkg, "configs", fake, raising=False)
    monkeypatch.setitem(__import__("sys").modules, "szero_jax.models.configs", fake)
    cfg = _Outer(_Inner((4, 5, 6)), depth=7)
    checkpoints.save_params(tmp_path / "ck", _params(), cfg, family="unet")
    _, back = checkpoints.load_params(tmp_path / "ck")
    assert back == cfg and isinstance(back.inner.widths, tuple)


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="path"):
        checkpoints.load_params(tmp_path / "absent")
    ck = checkpoints.save_params(tmp_path / "ck", _params(), {}, family="vae")
    with pytest.raises(ValueError, match="already exists"):
        checkpoints.save_params(ck, _params(), {}, family="vae")
    with pytest.raises(ValueError, match="expected 'unet'"):
        checkpoints.load_params(ck, expected_family="unet")
    with pytest.raises(ValueError, match="family"):
        checkpoints.save_params(tmp_path / "x", _params(), {}, family="")
    # Truncated config.
    text = (ck / "config.json").read_text()
    (ck / "config.json").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="truncated"):
        checkpoints.load_params(ck)
    (ck / "config.json").write_text(text)
    # Truncated / damaged array data.
    data = ck / checkpoints.PARAMS_FILE
    data.write_bytes(data.read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated"):
        checkpoints.load_params(ck)
    data.write_bytes(b"\x03")
    with pytest.raises(ValueError, match="truncated"):
        checkpoints.load_params(ck)
    data.unlink()
    with pytest.raises(FileNotFoundError, match="params.safetensors"):
        checkpoints.load_params(ck)
    # Missing config / params.
    ck2 = checkpoints.save_params(tmp_path / "ck2", _params(), {}, family="vae")
    (ck2 / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        checkpoints.load_params(ck2)
    ck3 = checkpoints.save_params(tmp_path / "ck3", _params(), {}, family="vae")
    meta = json.loads((ck3 / "config.json").read_text())
    meta["format_version"] = 99
    (ck3 / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format_version"):
        checkpoints.load_params(ck3)


def test_overwrite_replaces(tmp_path):
    ck = checkpoints.save_params(tmp_path / "ck", _params(), {"v": 1}, family="vae")
    checkpoints.save_params(ck, {"w": np.ones(2, np.float32)}, {"v": 2}, family="vae",
                            overwrite=True)
    params, cfg = checkpoints.load_params(ck)
    assert cfg == {"v": 2} and list(params) == ["w"]


def test_load_default_missing_explains(monkeypatch, tmp_path):
    monkeypatch.setattr(checkpoints, "TINY_DIR", tmp_path / "tiny")
    with pytest.raises(FileNotFoundError, match="train_tiny"):
        checkpoints.load_default("dynamicrafter_unet")
    checkpoints.save_params(tmp_path / "tiny" / "vae", _params(), {"a": 1}, family="vae")
    params, cfg = checkpoints.load_default("vae")
    assert cfg == {"a": 1} and float(params["scale"][0]) == 2.0


def test_round_trip_registered_config(tmp_path):
    from szero_jax.models import configs
    cfg = configs.get("svd_xt_vae")
    checkpoints.save_params(tmp_path / "ck", _params(), cfg, family="svd_xt_vae")
    _, back = checkpoints.load_params(tmp_path / "ck", expected_family="svd_xt_vae")
    assert back == cfg and isinstance(back.block_out_channels, tuple)


def test_load_casts_floats_while_reading(tmp_path):
    import ml_dtypes
    params = {"w": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
              "ids": np.arange(3, dtype=np.int32)}
    ck = checkpoints.save_params(tmp_path / "ck", params, {}, family="vae")
    bf, _ = checkpoints.load_params(ck, dtype=jnp.bfloat16)
    assert bf["w"].dtype == jnp.bfloat16 and bf["ids"].dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(bf["w"]), params["w"].astype(ml_dtypes.bfloat16))
    assert checkpoints.param_bytes(bf) == 12 * 2 + 3 * 4
    # a bfloat16 file read back as float32 is exact
    ck2 = checkpoints.save_params(tmp_path / "ck2", {"w": params["w"].astype(ml_dtypes.bfloat16)},
                                  {}, family="vae")
    f32, _ = checkpoints.load_params(ck2, dtype=jnp.float32)
    np.testing.assert_array_equal(f32["w"], params["w"].astype(ml_dtypes.bfloat16).astype(np.float32))


def test_writer_streams_in_any_order_and_leaves_nothing_on_failure(tmp_path):
    specs = {"a/kernel": ((2, 3), np.float32), "a/bias": ((3,), np.float32),
             "b/scale": ((4,), np.float32)}
    with checkpoints.ParamsWriter(tmp_path / "ck", specs, {"v": 1}, "vae") as w:
        assert w.total_bytes == (6 + 3 + 4) * 4
        w.write("b/scale", np.ones(4, np.float32))          # not in file order
        w.write("a/kernel", np.arange(6, dtype=np.float32).reshape(2, 3))
        with pytest.raises(ValueError, match="declared"):
            w.write("a/bias", np.zeros(4, np.float32))       # wrong shape
        with pytest.raises(ValueError, match="not one of"):
            w.write("c", np.zeros(1, np.float32))
        w.write("a/bias", np.full(3, 0.5, np.float32))
        with pytest.raises(ValueError, match="already written"):
            w.write("a/bias", np.full(3, 0.5, np.float32))
    params, cfg = checkpoints.load_params(tmp_path / "ck", "vae")
    assert cfg == {"v": 1}
    np.testing.assert_array_equal(params["a"]["kernel"], np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(params["b"]["scale"], np.ones(4))
    with pytest.raises(ValueError, match="never written"):   # an incomplete checkpoint
        with checkpoints.ParamsWriter(tmp_path / "ck2", specs, {}, "vae") as w:
            w.write("a/bias", np.zeros(3, np.float32))
    with pytest.raises(KeyboardInterrupt):                  # interrupted mid-way
        with checkpoints.ParamsWriter(tmp_path / "ck3", specs, {}, "vae") as w:
            w.write("a/bias", np.zeros(3, np.float32))
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]   # no partial outputs
    with pytest.raises(ValueError, match="already exists"):
        checkpoints.ParamsWriter(tmp_path / "ck", specs, {}, "vae")


def test_reads_format_1_orbax_checkpoints(tmp_path):
    """The shipped tiny family is in format 1 (orbax params/): still read, with dtype."""
    import orbax.checkpoint as ocp
    ck = tmp_path / "old"
    ck.mkdir()
    ocp.PyTreeCheckpointer().save((ck / "params").resolve(), _params())
    (ck / "config.json").write_text(json.dumps({"format_version": 1, "family": "vae",
                                                "config": {"a": 1}}))
    params, cfg = checkpoints.load_params(ck, "vae")
    assert cfg == {"a": 1}
    np.testing.assert_array_equal(params["enc"]["kernel"], np.arange(6).reshape(2, 3))
    bf, _ = checkpoints.load_params(ck, dtype=jnp.bfloat16)
    assert bf["enc"]["kernel"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(bf["scale"], np.float32), [2.0, -1.0])


def test_bundle_loaders_read_params_in_the_run_dtype(caplog):
    """load_video_models casts while reading (the shipped tiny family, format 1) and logs the
    params' bytes and the peak resident memory."""
    import logging

    import jax
    from szero_jax.pipelines import load_video_models
    with caplog.at_level(logging.INFO):
        bf = load_video_models(None, "bfloat16")
    nets = [bf.unet, bf.resampler, bf.vae, bf.text_encoder, bf.image_encoder, bf.depth.unet]
    leaves = jax.tree.leaves([n.params for n in nets])
    assert leaves and {str(a.dtype) for a in leaves} == {"bfloat16"}
    assert bf.dtype == jnp.bfloat16
    f32 = load_video_models(None)
    assert {str(a.dtype) for a in jax.tree.leaves(f32.unet.params)} == {"float32"}
    n_bytes = sum(checkpoints.param_bytes(n.params) for n in {id(n): n for n in nets}.values())
    assert n_bytes * 2 == sum(checkpoints.param_bytes(n.params) for n in {id(n): n for n in (
        f32.unet, f32.resampler, f32.vae, f32.text_encoder, f32.image_encoder,
        f32.depth.unet)}.values())
    assert any("GB of params as bfloat16; peak resident memory" in r.getMessage()
               for r in caplog.records)
