"""Perplexity with the field's protocol (Wanda's eval_ppl): non-overlapping windows of `seqlen` tokens,
tail dropped, ppl = exp(Σ NLL / Σ predicted tokens), each window predicting its last seqlen-1 tokens.

The vocabulary projection is applied to chunks of positions, so full-size float32 logits
([batch, seqlen, vocab]) never exist at once; memory stays flat for large vocabularies.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from neuronrank.engine.models import decoder_body
from neuronrank.engine.collect import split_on_oom, to_device

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
    while todo:
        batch = todo.popleft()
        try:
            part = _batch_nll(model, body, head, to_device(batch, device))
        except torch.OutOfMemoryError:
            todo.extendleft(reversed(split_on_oom(batch)))  # back off: halves, retried
            continue
        nll += part.to(device)
        done += len(batch)
        if progress is not None:
            progress(done * seqlen, n * seqlen)
    tokens = n * (seqlen - 1)
    total = float(nll)
    mean = total / tokens
    ppl = math.inf if mean > 709 else math.exp(mean)  # exp overflows past 709; a NaN stays NaN
    return Perplexity(ppl, total, tokens, n, seqlen, time.perf_counter() - t0, source)


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
