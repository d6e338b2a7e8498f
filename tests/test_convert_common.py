"""convert.common: safe loading refuses malicious pickles; mapping reports every problem."""
import os
import pickle
import re
from contextlib import nullcontext as _nullcontext

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from convert import common


class _Evil:
    """Unpickling this runs `touch <marker>`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("fmt", ["zip", "plain"])
def test_malicious_pickle_refused(tmp_path, fmt):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    payload = {"state_dict": {"w": torch.ones(2), "x": _Evil(marker)}}
    if fmt == "zip":
        torch.save(payload, path)  # torch.save's zip layout, data.pkl inside
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.warns() if fmt == "plain" else _nullcontext():  # torch notes the protocol
        with pytest.raises(ValueError, match="refused"):
            common.load_state_dict(path)
    assert not marker.exists()
    # Control: the payload is live, an unsafe load would have run it.
    if fmt == "zip":
        torch.load(path, weights_only=False)
    else:
        pickle.loads(path.read_bytes())
    assert marker.exists()


def test_torch_and_safetensors_loading(tmp_path):
    sd = {"a.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3),
          "b": torch.tensor([1.5, 2.5], dtype=torch.bfloat16)}
    torch.save({"state_dict": sd, "global_step": 7}, tmp_path / "m.ckpt")
    torch.save({"module": {"_forward_module." + k: v for k, v in sd.items()}}, tmp_path / "ds.pt")
    from safetensors.torch import save_file as save_torch
    save_torch(sd, tmp_path / "m.safetensors")
    for name in ("m.ckpt", "ds.pt", "m.safetensors"):
        loaded = common.load_state_dict(tmp_path / name)
        assert sorted(loaded) == ["a.weight", "b"], name
        assert loaded.shapes["a.weight"] == (2, 3)
        np.testing.assert_array_equal(loaded["a.weight"], np.arange(6).reshape(2, 3))
        np.testing.assert_array_equal(loaded["b"], [1.5, 2.5])
    with pytest.raises(FileNotFoundError, match="path"):
        common.load_state_dict(tmp_path / "none.ckpt")
    for name in ("m.ckpt", "m.safetensors"):  # truncated files
        data = (tmp_path / name).read_bytes()
        (tmp_path / f"cut_{name}").write_bytes(data[: len(data) // 2])
        with pytest.raises(ValueError, match="not a readable"):
            common.load_state_dict(tmp_path / f"cut_{name}")
    (tmp_path / "w.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="suffix"):
        common.load_state_dict(tmp_path / "w.npz")


def test_transforms():
    w = np.random.default_rng(0).normal(size=(5, 3, 2, 4)).astype(np.float32)  # O I H W
    hwio = common.TRANSFORMS["conv"](w)
    assert hwio.shape == (2, 4, 3, 5) and hwio[1, 2, 0, 4] == w[4, 0, 1, 2]
    w3 = np.zeros((5, 3, 2, 4, 6))
    assert common.TRANSFORMS["conv"](w3).shape == (2, 4, 6, 3, 5)
    assert common.TRANSFORMS["linear"](np.zeros((5, 3))).shape == (3, 5)
    assert common.TRANSFORMS["conv1x1_to_linear"](w[:, :, :1, :1]).shape == (3, 5)
    with pytest.raises(ValueError, match="1x1"):
        common.TRANSFORMS["conv1x1_to_linear"](w)


def test_flatten_unflatten():
    tree = {"a": {"b": 1, "c": {"d": 2}}, "e": 3}
    assert common.flatten(tree) == {"a/b": 1, "a/c/d": 2, "e": 3}
    assert common.unflatten(common.flatten(tree)) == tree
    with pytest.raises(ValueError, match="leaf"):
        common.unflatten({"a": 1, "a/b": 2})


def _keymap(key):
    if key.startswith("lin."):
        return ("dense/" + ("kernel" if key.endswith("weight") else "bias"),
                common.kernel_transform(key, 2 if key.endswith("weight") else 1))
    if key == "conv.weight":
        return ("conv/kernel", "conv")
    return None


def test_convert_streams_and_maps(tmp_path):
    rng = np.random.default_rng(1)
    sd = {"lin.weight": rng.normal(size=(4, 3)).astype(np.float32),
          "lin.bias": rng.normal(size=(4,)).astype(np.float32),
          "conv.weight": rng.normal(size=(6, 4, 3, 3)).astype(np.float32),
          "ema.decay": np.zeros(()), "betas": np.zeros(10)}
    save_file(sd, tmp_path / "m.safetensors")
    target = {"params": {"dense": {"kernel": np.zeros((3, 4)), "bias": np.zeros(4)},
                         "conv": {"kernel": np.zeros((3, 3, 4, 6))}}}
    tree = common.convert_to_tree(common.load_state_dict(tmp_path / "m.safetensors").items(),
                                  _keymap, target, dropped=("ema.", re.compile(r"^betas$")))
    np.testing.assert_array_equal(tree["dense"]["kernel"], sd["lin.weight"].T)
    np.testing.assert_array_equal(tree["conv"]["kernel"], sd["conv.weight"].transpose(2, 3, 1, 0))
    shapes = {k: v.shape for k, v in sd.items()}
    assert common.check_keymap(shapes, _keymap, target, dropped=("ema.", "betas")) == 3


def test_convert_lists_every_problem():
    shapes = {"lin.weight": (4, 3), "lin.bias": (5,), "mystery.weight": (2,),
              "conv.weight": (6, 4, 3, 3)}
    target = {"dense": {"kernel": (3, 4), "bias": (4,)}, "conv": {"kernel": (3, 3, 4, 6)},
              "norm": {"scale": (6,)}}
    with pytest.raises(common.ConversionError) as err:
        common.check_keymap(shapes, _keymap, target)
    msg = str(err.value)
    assert "1 unmapped PyTorch keys" in msg and "mystery.weight (2,)" in msg
    assert "1 mis-shaped keys" in msg and "lin.bias (5,) -> dense/bias" in msg
    assert "2 Flax params missing" in msg and "norm/scale (6,)" in msg and "dense/bias (4,)" in msg
    # Knowingly dropped keys are not reported.
    with pytest.raises(common.ConversionError) as err:
        common.check_keymap(shapes, _keymap, target, dropped=("mystery",))
    assert "unmapped" not in str(err.value)


# ------------------------------------------------------------------------ streaming conversion
def _torch_ckpt(tmp_path):
    rng = np.random.default_rng(2)
    sd = {"lin.weight": rng.normal(size=(4, 3)).astype(np.float32),
          "lin.bias": rng.normal(size=(4,)).astype(np.float32),
          "conv.weight": rng.normal(size=(6, 4, 3, 3)).astype(np.float32),
          "betas": np.zeros(10, np.float32)}
    torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in sd.items()}}, tmp_path / "m.ckpt")
    return sd, common.load_state_dict(tmp_path / "m.ckpt")


_TARGET = {"dense": {"kernel": np.zeros((3, 4)), "bias": np.zeros(4)},
           "conv": {"kernel": np.zeros((3, 3, 4, 6))}}


def test_stream_releases_each_tensor_once_used_and_data_survives(tmp_path):
    sd, state = _torch_ckpt(tmp_path)
    assert state._release is not None          # a memory-mapped file: pages can be dropped
    released, seen = [], []
    real = state._release
    state._release = lambda k: (released.append(k), real(k))
    for key, value in state.stream():
        assert released == seen                 # the previous tensor is released first
        np.testing.assert_array_equal(value, sd[key])
        seen.append(key)
    assert released == list(sd)
    np.testing.assert_array_equal(state["conv.weight"], sd["conv.weight"])  # re-read from the file


def test_check_jobs_reads_no_weights_and_lists_every_job(tmp_path):
    _, state = _torch_ckpt(tmp_path)

    def boom(key):
        raise AssertionError(f"read {key}")
    lazy = common.StateDict(list(state), boom, state.shapes)
    good = common.Job("net", lazy, _keymap, _TARGET, dropped=("betas",))
    common.check_jobs([good])                   # shapes only: nothing read
    bad = common.Job("other", lazy, _keymap, {"dense": {"kernel": np.zeros((2, 2))}},
                     dropped=("betas",), select=lambda k: k.startswith("lin."))
    with pytest.raises(common.ConversionError) as err:
        common.check_jobs([bad])                # conv.weight: selected by no job, not ignored
    msg = str(err.value)
    assert "other:" in msg and "dense/kernel" in msg and "conv.weight (6, 4, 3, 3)" in msg


def test_write_checkpoint_streams_in_dtype_with_progress(tmp_path, capsys):
    import ml_dtypes
    from szero_jax import checkpoints
    sd, state = _torch_ckpt(tmp_path)
    job = common.Job("net", state, _keymap, _TARGET, dropped=("betas",))
    for name in common.OUTPUT_DTYPES:
        out = common.write_checkpoint(tmp_path / name, [job], {"v": 1}, "test",
                                      common.output_dtype(name))
        params, cfg = checkpoints.load_params(out, "test")
        assert cfg == {"v": 1} and params["dense"]["kernel"].dtype == name
        want = sd["conv.weight"].transpose(2, 3, 1, 0).astype(common.output_dtype(name))
        np.testing.assert_array_equal(np.asarray(params["conv"]["kernel"]), want)
    sizes = {n: (tmp_path / n / checkpoints.PARAMS_FILE).stat().st_size for n in common.OUTPUT_DTYPES}
    data = (3 * 4 + 4 + 3 * 3 * 4 * 6) * 4
    assert sizes["float32"] - sizes["bfloat16"] == data // 2     # bfloat16 halves the data
    err = capsys.readouterr().err
    assert "net: converting 3 tensors, 0.00 GB as bfloat16" in err and "net: 3/3 tensors" in err
    assert ml_dtypes.bfloat16 == common.output_dtype("bfloat16")
    with pytest.raises(ValueError, match="dtype"):
        common.output_dtype("float16")


def test_launcher_refuses_options_of_other_families(fixtures_dir, tmp_path):
    from experiments import convert as launcher
    d = fixtures_dir / "dynamicrafter"
    with pytest.raises(ValueError, match="--parts: not an option of --family openclip"):
        launcher.run("openclip", str(d / "openclip_tiny.safetensors"), str(tmp_path / "o"),
                     parts=["unet"])
    with pytest.raises(ValueError, match="--dtype"):
        launcher.run("openclip", str(d / "openclip_tiny.safetensors"), str(tmp_path / "o"),
                     dtype="float16")
    assert not (tmp_path / "o").exists()
