"""A text's token stream: tokenized once per tokenizer and text, cached with a checksum (numpy, no torch).

The cache file `<cache>/tokens/<key>.npy` has a sidecar `<key>.json` (sha256 of the ids, dtype, shape, the
tokenizer and text fingerprints, the tokenizer's size); a file that disagrees with its sidecar, or holds an
id outside the vocabulary, is reported and re-tokenized: damaged tokens are never used.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path

import numpy as np

from neuronrank.data.paths import atomic_write_bytes, atomic_write_json, cache_dir, short_hash
from neuronrank.data.text import Corpus
from neuronrank.errors import UserError

log = logging.getLogger(__name__)


def tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    blob = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def token_checksum(ids: np.ndarray) -> str:
    """sha256 of a token stream's int32 bytes: what the statistics cache key is built from."""
    return hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int32).tobytes()).hexdigest()


def tokenizer_size(tokenizer) -> int:
    """The ids a tokenizer can produce (its vocabulary with the added tokens); a model's own count is
    engine.models.embedding_rows."""
    return len(tokenizer)


def _check_ids(ids: np.ndarray, vocab: int) -> None:
    if ids.ndim != 1 or ids.dtype != np.int32 or len(ids) == 0:
        raise ValueError(f"not a token stream (dtype {ids.dtype}, shape {ids.shape})")
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= vocab:
        raise ValueError(f"token ids out of range [{lo}, {hi}] for a vocabulary of {vocab}")


def _load_tokens(path: Path, meta_path: Path, expect: dict) -> np.ndarray:
    """The cached stream, verified against its sidecar (sha256, dtype, shape, tokenizer and text
    fingerprints) and the vocabulary; ValueError/OSError when anything disagrees."""
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if not isinstance(meta, dict):
        raise ValueError(f"the sidecar is a JSON {type(meta).__name__}, not an object")
    for k, v in expect.items():
        if meta.get(k) != v:
            raise ValueError(f"{k} is {meta.get(k)!r}, expected {v!r}")
    ids = np.load(path, allow_pickle=False)
    if list(ids.shape) != meta["shape"] or str(ids.dtype) != meta["dtype"]:
        raise ValueError(f"shape/dtype {ids.shape} {ids.dtype} differ from the sidecar")
    if token_checksum(ids) != meta["sha256"]:
        raise ValueError("sha256 differs from the sidecar")
    _check_ids(ids, expect["vocab_size"])
    return ids


def token_stream(tokenizer, corpus: Corpus, use_cache: bool = True) -> np.ndarray:
    """The whole corpus tokenized once (cached per tokenizer and text fingerprint).

    The cache file `<key>.npy` has a sidecar `<key>.json` (sha256 of the ids, dtype, shape, the
    tokenizer and text fingerprints, the vocabulary size). A file that disagrees with its sidecar, or
    holds an id outside the vocabulary, is reported and re-tokenized: damaged tokens are never used.
    """
    tok_fp = tokenizer_fingerprint(tokenizer)
    folder = cache_dir() / "tokens"
    key = [tok_fp, corpus.fingerprint] + (["special"] if corpus.special_tokens else [])
    path = folder / f"{short_hash(key)}.npy"
    meta_path = path.with_suffix(".json")
    expect = {"tokenizer": tok_fp, "text": corpus.fingerprint, "vocab_size": tokenizer_size(tokenizer)}
    if use_cache and path.is_file() and not meta_path.is_file():
        # written by a version that kept no checksum: it cannot be verified, so it is not used
        log.info("token cache %s has no checksum (an older cache); re-tokenizing", path.name)
    elif use_cache and path.is_file():
        try:
            return _load_tokens(path, meta_path, expect)
        except (ValueError, OSError, EOFError, KeyError, TypeError) as e:
            log.warning("token cache %s is damaged (%s); re-tokenizing", path.name, e)
    ids = tokenizer(corpus.text, add_special_tokens=corpus.special_tokens, verbose=False)["input_ids"]
    arr = np.asarray(ids, dtype=np.int32)
    try:
        _check_ids(arr, expect["vocab_size"])
    except ValueError as e:
        raise UserError(f"text source {corpus.name!r} with this tokenizer: {e}") from e
    if use_cache:
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        meta = {**expect, "sha256": token_checksum(arr), "dtype": str(arr.dtype), "shape": list(arr.shape)}
        try:
            # the sidecar goes first: a kill between the two leaves a file that fails its check
            atomic_write_json(meta_path, meta)
            atomic_write_bytes(path, buf.getvalue())
        except OSError as e:  # a read-only cache still lets the user work
            log.warning("cannot write token cache: %s", e)
    return arr


def check_vocab(ids, model_vocab: int, what: str = "token") -> None:
    """Ids a model's embedding cannot look up (a tokenizer larger than the model): one clear error
    instead of an IndexError deep inside the forward pass."""
    hi = int(ids.max()) if len(ids) else -1
    if hi >= model_vocab:
        raise UserError(f"{what} id {hi} is outside the model's vocabulary ({model_vocab}); "
                        "the tokenizer does not match the model")
