"""One forward pass with hooks -> per-neuron statistics.

For every MLP neuron i of every layer the pass accumulates, over all T calibration tokens t,
Σ|a_it| (float64), Σa_it, Σa_it², n_active_i = #{t: a_it > 0} and the top-k activations with where they
occurred; and per input feature the squared L2 norms Wanda needs (‖X‖² of the gate/up input, of the
down_proj input, and of the attention projections' inputs). Everything is an additive sum, so shards
merge exactly; memory is O(layers × width) beyond the model, independent of the number of tokens.
The hooks and accumulators are hooks.py's, their reductions kernels.py's.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from neuronrank.analysis.neuron_stats import DEFAULT_TOPK, SITES, NeuronStats
from neuronrank.engine.hooks import LayerAccumulator, finish, install_hooks
from neuronrank.engine.kernels import fused_kernels
from neuronrank.engine.models import decoder_body, mlp_blocks
from neuronrank.errors import UserError

log = logging.getLogger(__name__)

Progress = Callable[[int, int | None], None]


def batched(windows: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    return [windows[i:i + batch_size] for i in range(0, len(windows), batch_size)]


@torch.inference_mode()
def collect(model: nn.Module, batches: Iterable[torch.Tensor], site: str = "gate",
            progress: Progress | None = None, topk: int = DEFAULT_TOPK, first_window: int = 0,
            keep_windows: bool = True, skip_first: int = 0) -> NeuronStats:
    """Run the decoder body once over `batches` (LongTensor [batch, seq] each) -> NeuronStats.
    `skip_first` N: the first N positions of every window count in no statistic (attention-sink
    neurons fire there); the windows still run whole, so later positions see them as context."""
    if site not in SITES:
        raise UserError(f"unknown activation site {site!r}; choose one of {', '.join(SITES)}")
    blocks = mlp_blocks(model)
    body = decoder_body(model)
    device = next(model.parameters()).device
    batches = list(batches)
    total = sum(int(b.numel()) for b in batches)
    fused = fused_kernels(device, total * sum(b.width for b in blocks))
    accs = [LayerAccumulator(b, topk, b.gate.weight.device, site, fused) for b in blocks]
    for acc in accs:
        acc.skip_first = int(skip_first)
    handles = []
    try:
        act_modules = [b.act_fn for b in blocks]
        shared_act = len({id(m) for m in act_modules}) < len(act_modules)
        for acc in accs:
            handles += install_hooks(acc, shared_act)
        seen, n_windows, window_ids = 0, 0, []
        todo = deque(torch.as_tensor(b, dtype=torch.long) for b in batches)
        while todo:
            batch = todo.popleft()
            if batch.ndim != 2:
                raise UserError(f"each batch must be [batch, seq] token ids, got shape {tuple(batch.shape)}")
            if batch.shape[1] <= int(skip_first):
                raise UserError(f"skip_first {skip_first} leaves nothing of a {batch.shape[1]}-token window")
            for acc in accs:
                acc.window_offset, acc.seqlen = first_window + n_windows, batch.shape[1]
            try:
                body(input_ids=to_device(batch, device), use_cache=False)
            except torch.OutOfMemoryError:
                for acc in accs:
                    acc.discard()
                todo.extendleft(reversed(split_on_oom(batch)))
                continue
            for acc in accs:
                acc.commit()
            window_ids.append(batch.cpu().numpy().astype(np.int32))
            n_windows += len(batch)
            seen += int(batch.numel())
            if progress is not None:
                progress(seen, total)
    finally:
        for h in handles:
            h.remove()
    if not window_ids:
        raise UserError("no calibration batches were given")
    seqlens = {w.shape[1] for w in window_ids}
    if len(seqlens) != 1:
        raise UserError("all calibration windows must have the same length")
    return finish(accs, blocks, site, np.concatenate(window_ids) if keep_windows else None,
                   first_window, seqlens.pop())


def split_on_oom(batch: torch.Tensor) -> list[torch.Tensor]:
    """After an out-of-memory error: the batch in two halves to retry, or a clear error for one window."""
    if len(batch) <= 1:
        raise UserError(f"out of memory even for one window of {batch.shape[1]} tokens; use a shorter "
                        "seqlen, a smaller dtype, or --device-map auto")
    log.warning("out of memory on a batch of %d windows; retrying in halves", len(batch))
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    half = len(batch) // 2
    return [batch[:half], batch[half:]]


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    # pinned host memory lets the copy overlap with compute on a GPU
    if device.type == "cuda":
        return batch.pin_memory().to(device, non_blocking=True)
    return batch.to(device)
