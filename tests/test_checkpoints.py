"""szero_jax.checkpoints: orbax params + JSON config round trip and its errors."""
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
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "params"]
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
    data = [p for p in (ck / "params").rglob("*") if p.is_file() and p.stat().st_size > 0
            and "d" in p.relative_to(ck / "params").parts]
    assert data
    for p in data:
        p.write_bytes(p.read_bytes()[:3])
    with pytest.raises(ValueError, match="truncated"):
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
