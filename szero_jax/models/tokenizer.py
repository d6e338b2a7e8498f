"""Prompt tokenizers: ids ``[B, context_length]`` int32 as the CLIP text towers take them.

Both tokenizers share one interface and layout: ``[SOT, w_1, ..., w_n, EOT, pad, ...]``.
Over-long prompts are truncated to ``context_length`` with EOT kept last (what OpenCLIP's
``tokenize`` and HF's ``truncation=True`` both do) and a warning. An empty prompt ``""`` is
valid (it is the unconditional prompt of classifier-free guidance); an empty list of prompts
or a non-string prompt raises ``ValueError``.

- `CLIPBPETokenizer`: CLIP's byte-level BPE (49408 ids), built offline from files, either
  ``from_folder`` (a diffusers ``tokenizer/`` folder: ``vocab.json`` + ``merges.txt``, as the
  Stable Diffusion converter copies it) or ``from_openclip_vocab`` (OpenCLIP's
  ``bpe_simple_vocab_16e6.txt.gz``, which `convert/openclip.py` copies from the installed
  ``open_clip`` package next to the converted weights). Text is NFC-normalised,
  whitespace-collapsed and lower-cased (OpenCLIP additionally runs ``ftfy`` and HTML
  unescaping, which only matter for broken or escaped text).
- `WordTokenizer`: the tiny family's word-level tokenizer over a given vocabulary list
  (e.g. ``szero_jax.world.VOCABULARY``); unknown words map to ``<unk>`` with a warning.
  Like CLIP, EOT has the largest id, so ``argmax(ids)`` finds it.
"""
from __future__ import annotations

import gzip
import os
import re
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

CONTEXT_LENGTH = 77  # CLIP text context (OpenCLIP DEFAULT_CONTEXT_LENGTH, HF max_position_embeddings)


def _as_list(prompts) -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts: expected a string or a non-empty list of strings, got none")
    for p in prompts:
        if not isinstance(p, str):
            raise ValueError(f"prompts: expected strings, got {type(p).__name__} ({p!r})")
    return prompts


def _pack(rows: list[list[int]], prompts: list[str], sot: int, eot: int, pad: int,
          context_length: int) -> np.ndarray:
    out = np.full((len(rows), context_length), pad, np.int32)
    for i, ids in enumerate(rows):
        ids = [sot] + ids + [eot]
        if len(ids) > context_length:
            warnings.warn(f"prompt {i} has {len(ids)} tokens with SOT/EOT, more than the context "
                          f"length {context_length}; truncated: {prompts[i][:60]!r}...",
                          stacklevel=3)
            ids = ids[:context_length - 1] + [eot]
        out[i, :len(ids)] = ids
    return out


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable character table, in CLIP's vocabulary order.

    Printable Latin-1 bytes stand for themselves and come first; the other 68 bytes follow,
    mapped to chr(256), chr(257), ... in byte order.
    """
    keep = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
            + list(range(ord("®"), ord("ÿ") + 1)))
    table = {b: chr(b) for b in keep}
    rest = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + i) for i, b in enumerate(rest)})
    return table


class CLIPBPETokenizer:
    """CLIP BPE tokenizer (transformers' ``CLIPTokenizer`` engine), offline from files."""

    def __init__(self, hf_tokenizer, pad_id: int, context_length: int = CONTEXT_LENGTH):
        if context_length < 2:
            raise ValueError(f"context_length: expected >= 2, got {context_length}")
        self._tok = hf_tokenizer
        self.sot_id = int(hf_tokenizer.bos_token_id)
        self.eot_id = int(hf_tokenizer.eos_token_id)
        self.pad_id = int(pad_id)
        self.context_length = context_length
        self.vocab_size = len(hf_tokenizer)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, context_length: int = CONTEXT_LENGTH):
        """From a diffusers/transformers tokenizer folder (``vocab.json``, ``merges.txt``).

        Padding follows the folder's ``pad_token`` (SD 1.5: EOT 49407; SD 2: "!" = 0).
        """
        from transformers import CLIPTokenizer  # pylint: disable=import-outside-toplevel
        folder = Path(folder)
        for name in ("vocab.json", "merges.txt"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"folder: {folder} has no {name} (expected a CLIP "
                                        "tokenizer folder such as a diffusers 'tokenizer/')")
        tok = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
        return cls(tok, tok.pad_token_id, context_length)

    @classmethod
    def from_openclip_vocab(cls, path: str | os.PathLike, context_length: int = CONTEXT_LENGTH):
        """From OpenCLIP's ``bpe_simple_vocab_16e6.txt.gz``; pads with 0 like ``open_clip.tokenize``."""
        from transformers import CLIPTokenizer  # pylint: disable=import-outside-toplevel
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"path: no BPE vocabulary file at {path}")
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        # Line 0 is a header; CLIP uses the first 49152 - 256 - 2 merges (OpenAI CLIP tokenizer).
        merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1]]
        if len(merges) != 49152 - 256 - 2 or any(len(m) != 2 for m in merges):
            raise ValueError(f"path: {path} is not a CLIP BPE merges file")
        alphabet = list(_bytes_to_unicode().values())
        words = alphabet + [a + "</w>" for a in alphabet] + ["".join(m) for m in merges]
        words += ["<|startoftext|>", "<|endoftext|>"]  # ids 49406, 49407 (OpenCLIP's SOT/EOT)
        vocab = {w: i for i, w in enumerate(words)}
        tok = CLIPTokenizer(vocab=vocab, merges=merges)
        return cls(tok, 0, context_length)

    def encode(self, prompt: str) -> list[int]:
        """Token ids of one prompt, without SOT/EOT."""
        return list(self._tok(prompt, add_special_tokens=False)["input_ids"])

    def __call__(self, prompts: str | Sequence[str]) -> np.ndarray:
        prompts = _as_list(prompts)
        rows = [self.encode(p) for p in prompts]
        return _pack(rows, prompts, self.sot_id, self.eot_id, self.pad_id, self.context_length)


class WordTokenizer:
    """Word-level tokenizer over a fixed vocabulary (the tiny family's caption words).

    Ids: 0 pad, 1 ``<unk>``, 2 .. V+1 the words in the given order, V+2 SOT, V+3 EOT.
    Text is lower-cased and split into runs of letters/digits and single other symbols
    (so "," is a word of its own, as in the world's captions).
    """

    PAD, UNK = 0, 1

    def __init__(self, vocabulary: Sequence[str], context_length: int = CONTEXT_LENGTH):
        words = list(vocabulary)
        if not words:
            raise ValueError("vocabulary: expected a non-empty list of words")
        bad = [w for w in words if not isinstance(w, str) or _split(w) != [w.lower()]]
        if bad:
            raise ValueError(f"vocabulary: entries must be single lower-case words, got {bad[:5]}")
        if len(set(words)) != len(words):
            raise ValueError("vocabulary: contains duplicate words")
        if context_length < 2:
            raise ValueError(f"context_length: expected >= 2, got {context_length}")
        self.vocabulary = tuple(words)
        self._ids = {w: i + 2 for i, w in enumerate(words)}
        self.sot_id = len(words) + 2
        self.eot_id = len(words) + 3
        self.pad_id = self.PAD
        self.vocab_size = len(words) + 4
        self.context_length = context_length

    def encode(self, prompt: str) -> list[int]:
        words = _split(prompt)
        unknown = sorted({w for w in words if w not in self._ids})
        if unknown:
            warnings.warn(f"words outside the tokenizer vocabulary map to <unk>: {unknown}",
                          stacklevel=3)
        return [self._ids.get(w, self.UNK) for w in words]

    def __call__(self, prompts: str | Sequence[str]) -> np.ndarray:
        prompts = _as_list(prompts)
        rows = [self.encode(p) for p in prompts]
        return _pack(rows, prompts, self.sot_id, self.eot_id, self.pad_id, self.context_length)


def _split(text: str) -> list[str]:
    return re.findall(r"[^\W_]+|[^\w\s]|_", text.lower())
