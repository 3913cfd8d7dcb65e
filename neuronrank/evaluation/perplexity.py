"""Perplexity with the field's protocol (Wanda's eval_ppl): non-overlapping windows of `seqlen` tokens,
tail dropped, ppl = exp(Σ NLL / Σ predicted tokens), each window predicting its last seqlen-1 tokens.

    perplexity(model, windows)              the number, for windows already cut
    measure_ppl(model, tok, source, ...)    of a text source; a dense model's result cached per model and
                                            protocol in `<cache>/ppl/<key>.json` (checksummed, verified)

The vocabulary projection is applied to chunks of positions, so full-size float32 logits
([batch, seqlen, vocab]) never exist at once; memory stays flat for large vocabularies.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from neuronrank.analysis.numbers import ppl_from_nll
from neuronrank.data.paths import atomic_write_json, cache_dir, short_hash
from neuronrank.data.tokens import check_vocab
from neuronrank.engine import models
from neuronrank.engine.collect import split_on_oom, to_device
from neuronrank.engine.models import decoder_body
from neuronrank.engine.windows import evaluation_set

log = logging.getLogger(__name__)

LOGIT_CHUNK = 1024  # positions per lm_head call


@dataclass
class Perplexity:
    ppl: float
    nll: float  # Σ NLL (nats)
    tokens: int  # Σ predicted tokens
    windows: int
    seqlen: int
    seconds: float
    source: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def auto_batch_size(model: nn.Module, seqlen: int) -> int:
    """Windows per forward: ~4k tokens on a CPU (cache-friendly), ~64k on a GPU, at least 1."""
    device = next(model.parameters()).device
    budget = 65536 if device.type == "cuda" else 4096
    return max(1, budget // seqlen)


@torch.inference_mode()
def perplexity(model: nn.Module, windows: torch.Tensor, batch_size: int | None = None,
               progress: Callable[[int, int], None] | None = None, source: str = "") -> Perplexity:
    n, seqlen = windows.shape
    bs = batch_size or auto_batch_size(model, seqlen)
    body = decoder_body(model)
    head = model.get_output_embeddings()
    device = next(model.parameters()).device
    t0 = time.perf_counter()
    nll = torch.zeros((), dtype=torch.float64, device=device)
    todo = deque(windows[i:i + bs] for i in range(0, n, bs))
    done = 0
    handles = _layer_progress(model, progress, seqlen, n, lambda: done, lambda: current) if progress else []
    try:
        while todo:
            batch = todo.popleft()
            current = len(batch)
            try:
                part = _batch_nll(model, body, head, to_device(batch, device))
            except torch.OutOfMemoryError:
                todo.extendleft(reversed(split_on_oom(batch)))  # back off: halves, retried
                continue
            nll += part.to(device)
            done += len(batch)
            if progress is not None:
                progress(done * seqlen, n * seqlen)
    finally:
        for h in handles:
            h.remove()
    tokens = n * (seqlen - 1)
    total = float(nll)
    return Perplexity(ppl_from_nll(total, tokens), total, tokens, n, seqlen, time.perf_counter() - t0, source)


def _layer_progress(model, progress, seqlen: int, n: int, done, current) -> list:
    """Forward hooks that report the tokens a batch has carried through each decoder layer: a CPU batch of
    8 windows × 512 tokens takes half a minute, and a bar that moves only between batches sat at
    "starting" that long. Reports never go backwards (a batch split after running out of memory restarts)."""
    layers = models.decoder_layers(model)
    high = {"tokens": 0}

    def hook(index):
        def after(module, args, output):
            tokens = int((done() + current() * (index + 1) / len(layers)) * seqlen)
            if tokens > high["tokens"] and tokens < n * seqlen:
                high["tokens"] = tokens
                progress(tokens, n * seqlen)
            return None  # a forward hook that returned a tensor would replace the layer's output

        return after

    # the last layer's report is the batch's own (after its loss): every layer but that one
    return [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers) if i + 1 < len(layers)]


def _batch_nll(model, body, head, ids: torch.Tensor) -> torch.Tensor:
    hidden = body(input_ids=ids, use_cache=False).last_hidden_state[:, :-1]
    flat_h = hidden.reshape(-1, hidden.shape[-1])
    flat_y = ids[:, 1:].reshape(-1)
    nll = torch.zeros((), dtype=torch.float64, device=ids.device)
    for c in range(0, flat_h.shape[0], LOGIT_CHUNK):
        logits = _softcap(model, head(flat_h[c:c + LOGIT_CHUNK]).float())
        y = flat_y[c:c + LOGIT_CHUNK].to(logits.device)  # lm_head may sit on another GPU (device_map)
        nll += F.cross_entropy(logits, y, reduction="sum").double().to(ids.device)
    return nll


def _softcap(model, logits):
    """Gemma-2 style final logit soft-capping, where the config asks for it."""
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


# ----------------------------------------------------------------------------------------------
# of a text source, a dense result cached


def _body_sha256(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _ppl_record(res) -> dict:
    body = res.as_dict()
    return {"result": body, "sha256": _body_sha256(body)}


def _read_ppl(path, source: str, seqlen: int, windows: int):
    """A cached dense perplexity, or None when the file is missing or fails its checks (checksum,
    schema, protocol, ppl = exp(nll / tokens))."""
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text())
        body = rec["result"]
        if _body_sha256(body) != rec["sha256"]:
            raise ValueError("checksum differs")
        res = Perplexity(**body)
        if (res.seqlen, res.windows, res.tokens) != (seqlen, windows, windows * (seqlen - 1)):
            raise ValueError("protocol differs")
        if not (math.isfinite(res.nll) and res.nll >= 0 and res.tokens > 0):
            raise ValueError("nll out of range")
        expect = ppl_from_nll(res.nll, res.tokens)  # as perplexity() computes it
        if not (res.ppl == expect or math.isclose(res.ppl, expect, rel_tol=1e-6)):
            raise ValueError("ppl does not match nll / tokens")
        return res
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        log.warning("dense perplexity cache %s is damaged (%s); measuring again", path.name, e)
        return None


def measure_ppl(model, tokenizer, source: str, seqlen: int, windows: int | None, identity: dict,
                progress=None, use_cache: bool = True):
    """Perplexity of `model` on `source`; with `use_cache`, a dense result is kept per model + protocol
    (verified on load: checksum, schema and range; a damaged one is measured again)."""
    models.check_seqlen(model, seqlen)
    win, corpus = evaluation_set(tokenizer, source, seqlen, windows)
    check_vocab(win.flatten().numpy(), models.embedding_rows(model))
    dtype = models.dtype_name(next(model.parameters()).dtype)
    key = short_hash([identity, dtype, source, corpus.fingerprint, seqlen, int(win.shape[0])])
    path = cache_dir() / "ppl" / f"{key}.json"
    if use_cache:
        cached = _read_ppl(path, source, seqlen, int(win.shape[0]))
        if cached is not None:
            return cached, True
    res = perplexity(model, win, progress=progress, source=source)
    if use_cache:
        try:
            atomic_write_json(path, _ppl_record(res))
        except OSError as e:
            log.warning("cannot cache dense perplexity: %s", e)
    return res, False
