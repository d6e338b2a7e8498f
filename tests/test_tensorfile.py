"""szero_jax.tensorfile: safetensors read and written tensor by tensor, interchangeable with the
safetensors package both ways, and its errors."""
import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from safetensors.torch import load_file as load_torch

from szero_jax.tensorfile import TensorFile, TensorFileWriter, is_float


def _arrays():
    rng = np.random.default_rng(0)
    return {"w": rng.normal(size=(3, 5)).astype(np.float32), "h": np.arange(4, dtype=np.float16),
            "i": np.arange(6, dtype=np.int64).reshape(2, 3), "e": np.zeros((0, 2), np.float32),
            "s": np.array(2.5, np.float32)}


def test_reads_what_safetensors_writes(tmp_path):
    a = _arrays()
    save_file(a, tmp_path / "a.safetensors", metadata={"format": "np"})
    tf = TensorFile(tmp_path / "a.safetensors")
    assert tf.metadata == {"format": "np"} and sorted(tf) == sorted(a)
    for k, v in a.items():
        got = tf[k]
        assert got.dtype == v.dtype and got.shape == v.shape
        np.testing.assert_array_equal(got, v)


def test_safetensors_reads_what_it_writes_in_any_order(tmp_path):
    a = _arrays()
    specs = {k: (v.shape, v.dtype) for k, v in a.items()}
    specs["b"] = ((2, 2), ml_dtypes.bfloat16)
    b = np.array([[1.5, -2], [3, 0.25]], ml_dtypes.bfloat16)
    with TensorFileWriter(tmp_path / "o.safetensors", specs, {"k": "v"}) as w:
        w.write("b", b)
        for k in reversed(list(a)):
            w.write(k, a[k])
    back = load_torch(tmp_path / "o.safetensors")
    assert back["b"].dtype == torch.bfloat16
    np.testing.assert_array_equal(back["b"].float().numpy(), b.astype(np.float32))
    for k, v in a.items():
        np.testing.assert_array_equal(back[k].numpy(), v)
    assert TensorFile(tmp_path / "o.safetensors")["b"].dtype == ml_dtypes.bfloat16
    assert is_float(ml_dtypes.bfloat16) and is_float(np.float16) and not is_float(np.int32)


def test_errors(tmp_path):
    a = _arrays()
    save_file(a, tmp_path / "a.safetensors")
    data = (tmp_path / "a.safetensors").read_bytes()
    for name, blob in (("cut", data[:-5]), ("tiny", data[:5]), ("head", data[:20])):
        (tmp_path / f"{name}.safetensors").write_bytes(blob)
        with pytest.raises(ValueError, match=f"path: .*{name}.safetensors"):
            TensorFile(tmp_path / f"{name}.safetensors")
    with pytest.raises(ValueError, match="never written"):
        with TensorFileWriter(tmp_path / "w.safetensors", {"x": ((2,), np.float32)}):
            pass
    assert not (tmp_path / "w.safetensors").exists()
    with pytest.raises(ValueError, match="safetensors code"):
        TensorFileWriter(tmp_path / "c.safetensors", {"x": ((2,), np.complex64)})
