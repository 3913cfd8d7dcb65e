"""Token windows, the model's input tensors: calibration windows at seeded offsets (Wanda/SparseGPT, or
upstream's own samplers for wikitext2 and c4) and consecutive evaluation windows (Wanda's eval_ppl).

- calibration: `nsamples` windows of `seqlen` tokens at seeded random offsets of the token stream;
- evaluation: consecutive non-overlapping windows of `seqlen`, the tail dropped.

The sources come from data/text.py (which split: `role`), their token streams from data/tokens.py.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from neuronrank.data.text import Corpus, load_corpus
from neuronrank.data.tokens import token_checksum, token_stream
from neuronrank.errors import UserError

log = logging.getLogger(__name__)

REPEAT_LIMIT = 10  # calibration may reuse text (windows overlap), but not this many times over


def _check_sizes(nsamples: int | None, seqlen: int) -> None:
    if seqlen is None or int(seqlen) < 2:
        raise UserError(f"seqlen must be at least 2 tokens (got {seqlen})")
    if nsamples is not None and int(nsamples) < 1:
        raise UserError(f"nsamples must be at least 1 (got {nsamples})")


def calibration_windows(ids: np.ndarray, nsamples: int, seqlen: int, seed: int = 0) -> torch.Tensor:
    """`nsamples` windows of `seqlen` tokens at random offsets drawn from `seed` -> [nsamples, seqlen]."""
    _check_sizes(nsamples, seqlen)
    if len(ids) < seqlen:
        raise UserError(f"text too short: {len(ids)} tokens, a calibration window needs {seqlen}")
    total = int(nsamples) * int(seqlen)
    if total > REPEAT_LIMIT * len(ids):
        raise UserError(f"nsamples x seqlen = {total:,} tokens is {total / len(ids):,.0f} times the text's "
                        f"{len(ids):,} tokens (at most {REPEAT_LIMIT}x): use fewer or shorter windows, or "
                        "a longer text")
    if total > len(ids):
        log.warning("nsamples x seqlen = %s tokens exceeds the text's %s tokens: windows repeat",
                    f"{total:,}", f"{len(ids):,}")
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(ids) - seqlen + 1, size=int(nsamples))
    windows = np.stack([ids[s:s + seqlen] for s in starts])
    return torch.from_numpy(windows.astype(np.int64))


def upstream_offsets(n_tokens: int, nsamples: int, seqlen: int, seed: int) -> list[int]:
    """Upstream lib/data.py's wikitext2 offsets: random.seed(seed), random.randint(0, n - seqlen - 1)."""
    import random

    rng = random.Random(seed)  # the same sequence as random.seed(seed), without touching the global state
    return [rng.randint(0, n_tokens - seqlen - 1) for _ in range(int(nsamples))]


def document_windows(tokenizer, corpus: Corpus, nsamples: int, seqlen: int, seed: int) -> torch.Tensor:
    """Upstream's c4 sampler: a random document with more than seqlen tokens (tokenized on its own,
    default special tokens), then a random window inside it; Python random.seed(seed)."""
    import random

    _check_sizes(nsamples, seqlen)
    rng = random.Random(seed)
    docs, out, tries = corpus.docs, [], 0
    for _ in range(int(nsamples)):
        while True:
            tries += 1
            if tries > 100 * int(nsamples) + 10_000:
                raise UserError(f"text source {corpus.name!r}: too few documents longer than {seqlen} tokens")
            doc = docs[rng.randint(0, len(docs) - 1)]
            ids = tokenizer(doc, add_special_tokens=corpus.special_tokens, verbose=False)["input_ids"]
            if len(ids) > seqlen:
                break
        i = rng.randint(0, len(ids) - seqlen - 1)
        out.append(ids[i:i + seqlen])
    return torch.tensor(out, dtype=torch.int64)


def calibration_set(tokenizer, corpus: Corpus, nsamples: int, seqlen: int, seed: int = 0):
    """(windows [nsamples, seqlen], sha256 of the tokens they were cut from): the corpus's sampler."""
    if corpus.sampler == "documents":
        windows = document_windows(tokenizer, corpus, nsamples, seqlen, seed)
        return windows, token_checksum(windows.numpy().astype(np.int32).ravel())
    ids = token_stream(tokenizer, corpus)
    if corpus.sampler == "upstream":
        _check_sizes(nsamples, seqlen)
        if len(ids) <= seqlen + 1:
            raise UserError(f"text too short: {len(ids)} tokens, a calibration window needs {seqlen + 2}")
        starts = upstream_offsets(len(ids), nsamples, seqlen, seed)
        windows = torch.from_numpy(np.stack([ids[s:s + seqlen] for s in starts]).astype(np.int64))
    else:
        windows = calibration_windows(ids, nsamples, seqlen, seed)
    return windows, token_checksum(ids)


def evaluation_windows(ids: np.ndarray, seqlen: int, max_windows: int | None = None) -> torch.Tensor:
    """Consecutive non-overlapping windows of `seqlen`, tail dropped, optionally the first K only."""
    _check_sizes(None, seqlen)
    n = len(ids) // seqlen
    if n == 0:
        raise UserError(f"text too short: {len(ids)} tokens, an evaluation window needs {seqlen}")
    if max_windows is not None:
        if int(max_windows) < 1:
            raise UserError(f"eval-windows must be at least 1 (got {max_windows})")
        n = min(n, int(max_windows))
    return torch.from_numpy(ids[: n * seqlen].astype(np.int64).reshape(n, seqlen))


def evaluation_set(tokenizer, source: str, seqlen: int, windows: int | None):
    """(the evaluation windows of text `source`, its Corpus): at most `windows` of them (None: all; c4:
    the first 256 × seqlen tokens, as upstream)."""
    corpus = load_corpus(source, role="eval")
    ids = token_stream(tokenizer, corpus)
    if corpus.eval_windows is not None:
        windows = corpus.eval_windows if windows is None else min(windows, corpus.eval_windows)
    return evaluation_windows(ids, seqlen, windows), corpus
