"""Tokenizers: CLIP BPE against OpenCLIP's reference tokenizer; the tiny word tokenizer."""
import gzip
import importlib.util
import json
import sys
import types

import numpy as np
import pytest

from szero_jax.models import tokenizer as tk
from szero_jax.world import VOCABULARY

PROMPTS = ["a photo of a cat", "", "It's 3 dogs!!  Running, fast; (really) fast.",
           "A café in Zürich at 12:30 — naïve résumé", "snow-capped mountains ,lake"]


def _openclip_dir():
    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        pytest.skip("open_clip_torch is not installed (its BPE vocabulary file is needed)")
    from pathlib import Path
    return Path(spec.submodule_search_locations[0])


@pytest.fixture(scope="module")
def bpe():
    return tk.CLIPBPETokenizer.from_openclip_vocab(_openclip_dir() / "bpe_simple_vocab_16e6.txt.gz")


@pytest.fixture(scope="module")
def reference():
    """open_clip's SimpleTokenizer, loaded from its file (the package needs torchvision);
    ftfy (not installed) is stubbed by the identity, which is exact for well-formed text."""
    sys.modules.setdefault("ftfy", types.SimpleNamespace(fix_text=lambda s: s))
    spec = importlib.util.spec_from_file_location("_oc_tokenizer", _openclip_dir() / "tokenizer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.SimpleTokenizer()


def test_bpe_matches_openclip(bpe, reference):
    ours = bpe(PROMPTS)
    assert ours.dtype == np.int32 and ours.shape == (len(PROMPTS), 77)
    np.testing.assert_array_equal(ours, reference(PROMPTS).numpy())
    np.testing.assert_array_equal(ours[0, :7], [49406, 320, 1125, 539, 320, 2368, 49407])


def test_bpe_truncates_with_warning(bpe, reference):
    long = " ".join(["red green blue"] * 40)
    with pytest.warns(UserWarning, match="truncated"):
        ours = bpe([long])
    np.testing.assert_array_equal(ours, reference([long]).numpy())
    assert ours[0, -1] == bpe.eot_id


def test_bpe_from_folder_matches(bpe, tmp_path):
    """A diffusers-style tokenizer folder (vocab.json + merges.txt) gives the same ids."""
    (tmp_path / "vocab.json").write_text(json.dumps(bpe._tok.get_vocab()))  # pylint: disable=protected-access
    with gzip.open(_openclip_dir() / "bpe_simple_vocab_16e6.txt.gz", "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1:49152 - 256 - 2 + 1]
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    folder = tk.CLIPBPETokenizer.from_folder(tmp_path)
    assert folder.pad_id == folder.eot_id == 49407  # the default pad token, as SD 1.5
    ids = folder(PROMPTS)
    expected = bpe(PROMPTS)
    expected[expected == 0] = 49407
    expected[:, 0] = 49406
    np.testing.assert_array_equal(ids, expected)


def test_bpe_bad_inputs(bpe, tmp_path):
    with pytest.raises(ValueError, match="prompts"):
        bpe([])
    with pytest.raises(ValueError, match="prompts"):
        bpe(["ok", 3])
    with pytest.raises(FileNotFoundError, match="folder"):
        tk.CLIPBPETokenizer.from_folder(tmp_path)


def test_word_tokenizer():
    tok = tk.WordTokenizer(VOCABULARY)
    v = len(VOCABULARY)
    assert (tok.sot_id, tok.eot_id, tok.vocab_size) == (v + 2, v + 3, v + 4)
    ids = tok(["a large red striped disc, moving left", ""])
    assert ids.shape == (2, 77) and ids.dtype == np.int32
    words = ["a", "large", "red", "striped", "disc", ",", "moving", "left"]
    expected = [tok.sot_id] + [VOCABULARY.index(w) + 2 for w in words] + [tok.eot_id]
    np.testing.assert_array_equal(ids[0, :10], expected)
    assert not ids[0, 10:].any()
    np.testing.assert_array_equal(ids[1, :3], [tok.sot_id, tok.eot_id, 0])
    assert (ids.argmax(-1) == [9, 1]).all()  # EOT has the largest id, as CLIP pooling expects


def test_word_tokenizer_unknown_and_truncation():
    tok = tk.WordTokenizer(["red", "disc"], context_length=5)
    with pytest.warns(UserWarning, match="zebra"):
        ids = tok("Red zebra")
    np.testing.assert_array_equal(ids, [[4, 2, tok.UNK, 5, 0]])
    with pytest.warns(UserWarning, match="truncated"):
        ids = tok("red disc red disc red")
    np.testing.assert_array_equal(ids, [[4, 2, 3, 2, 5]])
    with pytest.raises(ValueError, match="vocabulary"):
        tk.WordTokenizer(["red", "red"])
    with pytest.raises(ValueError, match="vocabulary"):
        tk.WordTokenizer(["two words"])
