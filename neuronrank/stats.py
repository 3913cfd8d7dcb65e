"""One forward pass with hooks -> per-neuron statistics.

For every MLP neuron i of every layer the pass accumulates, over all T calibration tokens t,
Σ|a_it| (float64), Σa_it, Σa_it², n_active_i = #{t: a_it > 0} and the top-k activations with where they
occurred; and per input feature the squared L2 norms Wanda needs (‖X‖² of the gate/up input, of the
down_proj input, and of the attention projections' inputs). Everything is an additive sum, so shards
merge exactly; memory is O(layers × width) beyond the model, independent of the number of tokens.

Activation sites (TransformerLens names in brackets):
- `gate`    a = act_fn(gate_proj(x))                 [act_fn(blocks.L.mlp.hook_pre)] — the original method
- `product` a = act_fn(gate_proj(x)) * up_proj(x)    [blocks.L.mlp.hook_post] — the input of down_proj
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from neuronrank.errors import UserError
from neuronrank.models import GatedMLP, decoder_body, mlp_blocks
from neuronrank.neuron_stats import (  # noqa: F401  (the stats API: collect -> NeuronStats)
    DEFAULT_TOPK, FORMAT_VERSION, INPUT_NORMS, SITES, NeuronStats, merge)

log = logging.getLogger(__name__)

Progress = Callable[[int, int | None], None]


# ----------------------------------------------------------------------------------------------
# the pass


class _LayerAccumulator:
    """Device-side running sums of one layer; reduced once per batch, no per-token buffers."""

    def __init__(self, block: GatedMLP, k: int, device, site: str):
        n, h = block.width, block.gate.in_features
        f64 = dict(dtype=torch.float64, device=device)
        self.block, self.k, self.site = block, k, site
        self.sum_abs = torch.zeros(n, **f64)
        self.sum_act = torch.zeros(n, **f64)
        self.sum_sq = torch.zeros(n, **f64)
        self.n_active = torch.zeros(n, dtype=torch.int64, device=device)
        self.tokens = 0
        self.input_sq = {"mlp_in": torch.zeros(h, **f64), "down_in": torch.zeros(n, **f64)}
        if "q" in block.attn:
            self.input_sq["attn_in"] = torch.zeros(block.attn["q"].in_features, **f64)
        if "o" in block.attn:
            self.input_sq["o_in"] = torch.zeros(block.attn["o"].in_features, **f64)
        self.top_vals = torch.zeros((0, n), device=device)
        self.top_window = torch.zeros((0, n), dtype=torch.int64, device=device)
        self.top_pos = torch.zeros((0, n), dtype=torch.int64, device=device)
        self.window_offset = 0  # global index of the current batch's first window
        self.seqlen = 1
        self.pending: dict = {}

    # Hooks only stage this batch's partial sums; commit() adds them once the whole forward pass
    # succeeded. A batch that fails half-way (out of memory) is discarded and retried in halves
    # without counting any layer twice.

    def add_input(self, name: str, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1])
        self.pending[name] = _sum_rows(torch.mul(x, x, out=_scratch(x)))

    def add_activation(self, a3: torch.Tensor) -> None:
        a = a3.reshape(-1, a3.shape[-1])
        buf = _scratch(a)
        # Reduce over this batch's tokens in the activation dtype (pairwise summation), then add into
        # the float64 accumulators: converting whole activations to float64 first costs ~5x more.
        p = self.pending
        p["tokens"] = a.shape[0]
        p["sum_act"] = _sum_rows(a)
        p["sum_abs"] = _sum_rows(torch.abs(a, out=buf))
        p["sum_sq"] = _sum_rows(torch.mul(a, a, out=buf))
        p["n_active"] = _sum_rows(torch.sign(a, out=buf).clamp_(min=0)).round().to(torch.int64)
        # One top-k entry per calibration window (its maximum and where): k distinct contexts per
        # neuron, which is what a reader wants to see, at a quarter of the cost of a token-level topk.
        p["top"] = a3.reshape(-1, self.seqlen, a3.shape[-1]).max(dim=1)

    def discard(self) -> None:
        self.pending = {}

    def commit(self) -> None:
        p, self.pending = self.pending, {}
        for name in self.input_sq:
            if name in p:
                self.input_sq[name] += p[name]
        if "tokens" not in p:
            return
        self.tokens += p["tokens"]
        self.sum_act += p["sum_act"]
        self.sum_abs += p["sum_abs"]
        self.sum_sq += p["sum_sq"]
        self.n_active += p["n_active"]
        vals, pos = p["top"]  # [windows, neurons]
        win = torch.arange(vals.shape[0], device=vals.device).add_(self.window_offset)[:, None].expand_as(pos)
        vals = torch.cat([self.top_vals, vals.float()])
        wins = torch.cat([self.top_window, win])
        poss = torch.cat([self.top_pos, pos])
        if vals.shape[0] > self.k:
            keep = vals.topk(self.k, dim=0).indices
            vals, wins, poss = vals.gather(0, keep), wins.gather(0, keep), poss.gather(0, keep)
        self.top_vals, self.top_window, self.top_pos = vals, wins, poss


_SCRATCH: dict = {}


def _scratch(like: torch.Tensor) -> torch.Tensor:
    """One reusable buffer per shape/dtype/device: layers run one after another, so they can share
    it, and the hooks allocate nothing the size of an activation."""
    key = (tuple(like.shape), like.dtype, like.device)
    buf = _SCRATCH.get(key)
    if buf is None:
        if len(_SCRATCH) >= 8:  # a few live shapes at most (the last batch may be smaller)
            _SCRATCH.clear()
        buf = _SCRATCH[key] = torch.empty_like(like)
    return buf


def _sum_rows(x: torch.Tensor) -> torch.Tensor:
    # bf16/fp16 sums would round their result to 8/11 bits: accumulate those in float32
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    return x.sum(0, dtype=acc).to(torch.float64)


def batched(windows: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    return [windows[i:i + batch_size] for i in range(0, len(windows), batch_size)]


@torch.inference_mode()
def collect(model: nn.Module, batches: Iterable[torch.Tensor], site: str = "gate",
            progress: Progress | None = None, topk: int = DEFAULT_TOPK, first_window: int = 0,
            keep_windows: bool = True) -> NeuronStats:
    """Run the decoder body once over `batches` (LongTensor [batch, seq] each) -> NeuronStats."""
    if site not in SITES:
        raise UserError(f"unknown activation site {site!r}; choose one of {', '.join(SITES)}")
    blocks = mlp_blocks(model)
    body = decoder_body(model)
    device = next(model.parameters()).device
    batches = list(batches)
    total = sum(int(b.numel()) for b in batches)
    accs = [_LayerAccumulator(b, topk, b.gate.weight.device, site) for b in blocks]
    handles = []
    try:
        act_modules = [b.act_fn for b in blocks]
        shared_act = len({id(m) for m in act_modules}) < len(act_modules)
        for acc in accs:
            handles += _install_hooks(acc, shared_act)
        seen, n_windows, window_ids = 0, 0, []
        todo = deque(torch.as_tensor(b, dtype=torch.long) for b in batches)
        while todo:
            batch = todo.popleft()
            if batch.ndim != 2:
                raise UserError(f"each batch must be [batch, seq] token ids, got shape {tuple(batch.shape)}")
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
    return _finish(accs, blocks, site, np.concatenate(window_ids) if keep_windows else None,
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


def _install_hooks(acc: _LayerAccumulator, shared_act: bool) -> list:
    # Hooks return None: returning a tensor would replace the module's output.
    b = acc.block
    hs = [b.gate.register_forward_pre_hook(lambda m, args: acc.add_input("mlp_in", args[0])),
          b.down.register_forward_pre_hook(lambda m, args: _down_input(acc, args[0]))]
    if "q" in b.attn:
        hs.append(b.attn["q"].register_forward_pre_hook(lambda m, args: acc.add_input("attn_in", args[0])))
    if "o" in b.attn:
        hs.append(b.attn["o"].register_forward_pre_hook(lambda m, args: acc.add_input("o_in", args[0])))
    if acc.site == "gate":
        if isinstance(b.act_fn, nn.Module) and not shared_act:
            # the act_fn module's own output: no recomputation
            hs.append(b.act_fn.register_forward_hook(lambda m, args, out: acc.add_activation(out)))
        else:
            # act_fn shared between layers, or a plain function: recompute it from gate_proj's output
            hs.append(b.gate.register_forward_hook(lambda m, args, out: acc.add_activation(b.act_fn(out))))
    return hs


def _down_input(acc: _LayerAccumulator, p: torch.Tensor) -> None:
    acc.add_input("down_in", p)
    if acc.site == "product":
        acc.add_activation(p)


def _finish(accs, blocks, site, windows, first_window, seqlen) -> NeuronStats:
    np64 = lambda t: t.detach().to("cpu", torch.float64).numpy()  # noqa: E731
    stack = lambda f: np.stack([f(a) for a in accs])  # noqa: E731
    names = [n for n in INPUT_NORMS if all(n in a.input_sq for a in accs)]
    k = accs[0].k
    gate_w = [b.gate.weight.detach() for b in blocks]
    return NeuronStats(
        site=site,
        sum_abs=stack(lambda a: np64(a.sum_abs)),
        sum_act=stack(lambda a: np64(a.sum_act)),
        sum_sq=stack(lambda a: np64(a.sum_sq)),
        n_active=stack(lambda a: a.n_active.cpu().numpy()),
        tokens=np.array([a.tokens for a in accs], dtype=np.int64),
        w_norm=np.stack([np64(torch.linalg.vector_norm(w, dim=1, dtype=torch.float64)) for w in gate_w]),
        up_norm=np.stack([np64(torch.linalg.vector_norm(b.up.weight, dim=1, dtype=torch.float64)) for b in blocks]),
        down_norm=np.stack([np64(torch.linalg.vector_norm(b.down.weight, dim=0, dtype=torch.float64))
                            for b in blocks]),
        down_abs_mean=np.stack([np64(b.down.weight.detach().abs().mean(dim=0, dtype=torch.float64))
                                for b in blocks]),
        input_sq={n: stack(lambda a, n=n: np64(a.input_sq[n])) for n in names},
        top_vals=stack(lambda a: _pad_k(a.top_vals, k, -np.inf)).astype(np.float32),
        top_window=stack(lambda a: _pad_k(a.top_window, k, -1)).astype(np.int32),
        top_pos=stack(lambda a: _pad_k(a.top_pos, k, -1)).astype(np.int32),
        windows=windows,
        first_window=first_window,
        meta={"format_version": FORMAT_VERSION, "site": site, "seqlen": seqlen, "topk": k},
    )


def _pad_k(t: torch.Tensor, k: int, fill) -> np.ndarray:
    """[rows<=k, neurons] device tensor -> [neurons, k] array, padded when fewer windows than k were seen."""
    arr = t.T.cpu().numpy()
    if arr.shape[1] < k:
        arr = np.concatenate([arr, np.full((arr.shape[0], k - arr.shape[1]), fill, dtype=arr.dtype)], axis=1)
    return arr
