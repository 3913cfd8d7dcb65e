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
import os
from collections import deque
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from neuronrank.errors import UserError
from neuronrank.engine.models import GatedMLP, decoder_body, mlp_blocks
from neuronrank.analysis.neuron_stats import (  # noqa: F401  (the stats API: collect -> NeuronStats)
    DEFAULT_TOPK, FORMAT_VERSION, INPUT_NORMS, SITES, NeuronStats, merge)

log = logging.getLogger(__name__)

Progress = Callable[[int, int | None], None]


# ----------------------------------------------------------------------------------------------
# the pass


# rows of _LayerAccumulator.sums: Σa, Σ|a|, Σa², n_active (float64 holds counts exactly up to 2^53)
_SUM_ACT, _SUM_ABS, _SUM_SQ, _N_ACTIVE = range(4)


class _LayerAccumulator:
    """Device-side running sums of one layer; reduced once per batch, no per-token buffers.

    The hooks do the few full passes over each activation that the statistics need and nothing else:
    no host reads (no syncs on a GPU), small per-batch partials in float32, one float64 add per batch.
    """

    def __init__(self, block: GatedMLP, k: int, device, site: str, fused=None):
        n, h = block.width, block.gate.in_features
        f64 = dict(dtype=torch.float64, device=device)
        self.block, self.k, self.site, self.fused = block, k, site, fused
        self.sums = torch.zeros(4, n, **f64)
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
        self.skip_first = 0  # positions ignored at the start of each window (attention sinks)
        self.pending: dict = {}
        # upstream Wanda's numerics (layer-by-layer calibration): input_sq is then the float32 running
        # mean over calls of ‖x‖² as lib/layerwrapper.py's WrappedGPT keeps it, so that near-ties of
        # |W|·‖X‖ fall as upstream's do and its masks are reproduced bit for bit
        self.running_mean = False
        self.calls = 0

    # Hooks only stage this batch's partial sums; commit() adds them once the whole forward pass
    # succeeded. A batch that fails half-way (out of memory) is discarded and retried in halves
    # without counting any layer twice.

    def add_input(self, name: str, x: torch.Tensor) -> None:
        x3 = x.reshape(-1, self.seqlen, x.shape[-1])  # [windows, seqlen, features]
        if self.skip_first:
            x = x3[:, self.skip_first:]
        if self.running_mean:  # WrappedGPT.add_batch: torch.norm(inp.t().float(), dim=1) ** 2
            self.pending[name] = torch.norm(x.reshape(-1, x.shape[-1]).t().float(), p=2, dim=1) ** 2
            self.pending["calls"] = x3.shape[0]  # upstream's tmp: the batch's windows (one per call there)
            return
        x = x.reshape(-1, x.shape[-1])
        self.pending[name] = self.fused.sq(x) if self.fused is not None else _sq_sum_rows(x)

    def add_activation(self, a3: torch.Tensor) -> None:
        a3 = a3.reshape(-1, self.seqlen, a3.shape[-1])  # [windows, seqlen, neurons]
        if self.skip_first:
            a3 = a3[:, self.skip_first:].contiguous()
        p = self.pending
        p["tokens"] = a3.shape[0] * a3.shape[1]
        if self.fused is not None:
            p["sums"], p["top"] = self.fused(a3, self.k > 0)
        else:
            p["sums"], p["top"] = activation_sums(a3, self.k > 0)

    def discard(self) -> None:
        self.pending = {}

    def commit(self) -> None:
        p, self.pending = self.pending, {}
        if self.running_mean and "calls" in p:  # scaler_row *= n / (n + b); n += b; scaler_row += ‖x‖² / n
            n, self.calls = self.calls, self.calls + p["calls"]
            for name in self.input_sq:
                if name in p:
                    mean = self.input_sq[name]
                    mean = mean if mean.dtype == torch.float32 else mean.float()
                    mean *= n / self.calls
                    mean += p[name] / self.calls
                    self.input_sq[name] = mean
        else:
            for name in self.input_sq:
                if name in p:
                    self.input_sq[name] += p[name]
        if "tokens" not in p:
            return
        self.tokens += p["tokens"]
        self.sums += p["sums"]
        if p["top"] is None:
            return
        vals, pos = p["top"]  # [windows, neurons]
        if self.skip_first:
            pos = pos + self.skip_first  # positions within the whole window
        win = torch.arange(vals.shape[0], device=vals.device).add_(self.window_offset)[:, None].expand_as(pos)
        vals = torch.cat([self.top_vals, vals.float()])
        wins = torch.cat([self.top_window, win])
        poss = torch.cat([self.top_pos, pos])
        if vals.shape[0] > self.k:
            keep = vals.topk(self.k, dim=0).indices
            vals, wins, poss = vals.gather(0, keep), wins.gather(0, keep), poss.gather(0, keep)
        self.top_vals, self.top_window, self.top_pos = vals, wins, poss


# ----------------------------------------------------------------------------------------------
# the per-batch reductions (the whole cost of statistics beyond the forward)


def activation_sums(a3: torch.Tensor, want_top: bool = True):
    """[windows, seqlen, neurons] activation -> ([4, neurons] Σa, Σ|a|, Σa², n_active for this batch,
    (per-window max [windows, neurons], its position) or None).

    Eager kernels, chosen per device for the fewest full passes: on a GPU every reduction is one read
    (norms with float32 accumulation), the count a > 0 one compare; on a CPU the norm kernels along the
    token axis are slow, so it uses relu/sign into one scratch buffer and fast column sums, with
    Σ|a| = 2·Σrelu(a) − Σa. Counts are sums of exact 0/1 values (exact in float32 below 2^24 tokens
    per batch, float64 beyond), and a == 0 is not active.
    """
    a = a3.reshape(-1, a3.shape[-1])
    acc = torch.float64 if a.dtype == torch.float64 or a.shape[0] >= 1 << 24 else torch.float32
    if a.is_cuda:
        s_act = a.sum(0, dtype=acc)
        s_abs = torch.linalg.vector_norm(a, 1, dim=0, dtype=acc)
        s_sq = torch.linalg.vector_norm(a, 2, dim=0, dtype=acc).square_()
        n_act = torch.gt(a, 0).sum(0, dtype=acc)
        sums = torch.stack([s_act, s_abs, s_sq, n_act])
    else:
        if a.dtype not in (torch.float32, torch.float64):  # bf16 squares would round to 8 bits
            a = _scratch(a, torch.float32, tag="upcast").copy_(a)
        buf = _scratch(a)
        s_act = a.sum(0, dtype=acc)
        s_pos = torch.clamp(a, min=0, out=buf).sum(0, dtype=acc)
        n_act = buf.sign_().sum(0, dtype=acc)  # relu(a) > 0 exactly where a > 0
        s_sq = torch.mul(a, a, out=buf).sum(0, dtype=acc)
        sums = torch.stack([s_act, s_pos.mul_(2).sub_(s_act), s_sq, n_act])
    # One top-k entry per calibration window (its maximum and where): k distinct contexts per
    # neuron, which is what a reader wants to see, at a quarter of the cost of a token-level topk.
    if not want_top:
        return sums, None
    if a.is_cuda:
        return sums, tuple(a3.max(dim=1))
    return sums, _window_max_cpu(a3)


def _window_max_cpu(a3: torch.Tensor):
    """a3.max(dim=1) (values, first position of the maximum) without the CPU's scalar max-with-indices
    kernel over a middle axis (~6x a plain pass): one vectorised amax over blocks of 16 positions,
    then the first block holding the window maximum, then the first position inside that block,
    both found on 1/16 of the data."""
    W, S, n = a3.shape
    B = 16
    if S % B or S < 4 * B:
        return a3.amax(1), _first_equal(a3, a3.amax(1))
    blocks = a3.reshape(W, S // B, B, n)
    bmax = blocks.amax(2)  # [W, S/B, n]: the one full read
    m = bmax.amax(1)  # [W, n]
    bi = _first_equal(bmax, m)  # first block holding the maximum
    rows = torch.gather(blocks, 1, bi.view(W, 1, 1, n).expand(W, 1, B, n)).squeeze(1)  # [W, B, n]
    return m, bi.mul_(B).add_(_first_equal(rows, m))


def _first_equal(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """[W, L, n], [W, n] -> int64 [W, n]: the first l with x[w, l, i] == m[w, i] (vectorised argmax)."""
    L = x.shape[1]
    buf = torch.ne(x, m.unsqueeze(1)).to(torch.float32)  # 0 where equal, 1 elsewhere
    buf.mul_(L).add_(torch.arange(L, dtype=torch.float32).view(1, L, 1))  # l where equal, l + L elsewhere
    return buf.amin(1).clamp_(max=L - 1).to(torch.int64)  # (NaN: nothing equal; stay in range)


def _fused_sums(a3: torch.Tensor, want_top: bool):
    """The same as activation_sums as one kernel for torch.compile: a single read of the activation
    gives per-window partial sums (float32), the window max and its position.

    The position is the smallest index where the activation equals the window max: a min-reduction
    that inductor vectorises on a CPU; with `max(dim=1)` and its indices (a scalar loop there) the
    kernel took 2.6 ms on [8, 256, 1536] float32 with 2 threads, this way 0.8 ms."""
    acc = torch.float64 if a3.dtype == torch.float64 else torch.float32
    a = a3.to(acc)
    part = torch.stack([a.sum(1), a.abs().sum(1), (a * a).sum(1), (a > 0).to(acc).sum(1)])  # [4, W, n]
    sums = part.sum(1)
    if not want_top:
        return sums, None
    S = a3.shape[1]
    m = a3.amax(1)
    at = torch.arange(S, device=a3.device, dtype=torch.int32).view(1, S, 1)
    pos = torch.where(a3 == m.unsqueeze(1), at, S).amin(1).clamp(max=S - 1)  # (NaN: nothing equal)
    return sums, (m, pos.to(torch.int64))


def _fused_sq(x: torch.Tensor) -> torch.Tensor:
    """_sq_sum_rows as one kernel for torch.compile: one read, no squared copy."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    x = x.to(acc)
    return (x * x).sum(0).to(torch.float64)


def _sq_sum_rows(x: torch.Tensor) -> torch.Tensor:
    """Σ over rows of x² (Wanda's ‖X_k‖²), float64 [features]."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    if x.is_cuda:  # one read, float32 accumulation, no rounded bf16 squares
        return torch.linalg.vector_norm(x, 2, dim=0, dtype=acc).square_().to(torch.float64)
    if x.dtype not in (torch.float32, torch.float64):
        x = _scratch(x, torch.float32, tag="upcast").copy_(x)
    return torch.mul(x, x, out=_scratch(x)).sum(0, dtype=acc).to(torch.float64)


_COMPILED: dict = {}
COMPILE_ENV = "NEURONRANK_COMPILE"  # 1: always, 0: never, auto (default): when it pays off


def _fused_fn(device: torch.device, elements: int):
    """torch.compile'd activation_sums and input square sums when it pays: their one-pass kernels are
    several times faster than the eager passes on a CPU, but compiling costs ~3-6 s (warm on-disk
    cache) to ~20 s (cold) on this 2-core machine, and on a GPU the eager kernels are already
    memory-bound single reads. `auto` compiles on a CPU for runs of >= 5e9 activation values (the
    embedded model: ~110k tokens, minutes of forward).
    Any compile failure falls back to the eager kernels."""
    mode = os.environ.get(COMPILE_ENV, "auto").strip().lower()
    if mode in ("0", "off", "false", "no"):
        return None
    if mode == "auto" and not (device.type == "cpu" and elements >= 5e9):
        return None
    if not hasattr(torch, "compile"):
        return None
    key = device.type
    if key not in _COMPILED:
        _COMPILED[key] = (torch.compile(_fused_sums, dynamic=False), torch.compile(_fused_sq, dynamic=False))
    return _Compiled(key)


class _Compiled:
    """The compiled kernels of one device type; any compile failure switches them all to eager."""

    def __init__(self, key: str):
        self.key = key

    def _call(self, i: int, eager, *args):
        kernels = _COMPILED.get(self.key)
        if kernels is None:
            return eager(*args)
        try:
            return kernels[i](*args)
        except torch.OutOfMemoryError:
            raise
        except Exception as e:  # no compiler, unsupported backend...: the eager kernels
            log.warning("torch.compile of the statistics kernel failed (%s); using eager kernels",
                        str(e).splitlines()[0] if str(e) else type(e).__name__)
            _COMPILED[self.key] = None
            return eager(*args)

    def __call__(self, a3: torch.Tensor, want_top: bool):
        return self._call(0, activation_sums, a3, want_top)

    def sq(self, x: torch.Tensor) -> torch.Tensor:
        return self._call(1, _sq_sum_rows, x)


_SCRATCH: dict = {}


def _scratch(like: torch.Tensor, dtype: torch.dtype | None = None, tag: str = "") -> torch.Tensor:
    """One reusable buffer per shape/dtype/device: layers run one after another, so they can share
    it, and the hooks allocate nothing the size of an activation."""
    dtype = dtype or like.dtype
    key = (tuple(like.shape), dtype, like.device, tag)
    buf = _SCRATCH.get(key)
    if buf is None:
        if len(_SCRATCH) >= 8:  # a few live shapes at most (the last batch may be smaller)
            _SCRATCH.clear()
        buf = _SCRATCH[key] = torch.empty(like.shape, dtype=dtype, device=like.device)
    return buf


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
    fused = _fused_fn(device, total * sum(b.width for b in blocks))
    accs = [_LayerAccumulator(b, topk, b.gate.weight.device, site, fused) for b in blocks]
    for acc in accs:
        acc.skip_first = int(skip_first)
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
    # Stack every field on its device and copy each once: a handful of host syncs per pass, not
    # one per layer and field (that was ~480 on a 32-layer model).
    host = lambda ts: torch.stack([t.to(ts[0].device) for t in ts]).cpu()  # noqa: E731
    np64 = lambda ts: host(ts).to(torch.float64).numpy()  # noqa: E731
    names = [n for n in INPUT_NORMS if all(n in a.input_sq for a in accs)]
    k = accs[0].k
    sums = np64([a.sums for a in accs])  # [layers, 4, neurons]
    return NeuronStats(
        site=site,
        sum_abs=sums[:, _SUM_ABS],
        sum_act=sums[:, _SUM_ACT],
        sum_sq=sums[:, _SUM_SQ],
        n_active=np.rint(sums[:, _N_ACTIVE]).astype(np.int64),
        tokens=np.array([a.tokens for a in accs], dtype=np.int64),
        w_norm=np64([_weight_norm(b.gate.weight, 1) for b in blocks]),
        up_norm=np64([_weight_norm(b.up.weight, 1) for b in blocks]),
        down_norm=np64([_weight_norm(b.down.weight, 0) for b in blocks]),
        down_abs_mean=np64([_abs_mean(b.down.weight, 0) for b in blocks]),
        input_sq={n: np64([a.input_sq[n] for a in accs]) for n in names},
        top_vals=_pad_k(host([a.top_vals for a in accs]), k, -np.inf).astype(np.float32),
        top_window=_pad_k(host([a.top_window for a in accs]), k, -1).astype(np.int32),
        top_pos=_pad_k(host([a.top_pos for a in accs]), k, -1).astype(np.int32),
        windows=windows,
        first_window=first_window,
        meta={"format_version": FORMAT_VERSION, "site": site, "seqlen": seqlen, "topk": k},
    )


def _weight_norm(w: torch.Tensor, dim: int) -> torch.Tensor:
    """‖W‖₂ along `dim` as float64, without a float64 copy of the matrix (that copy cost ~5 % of a
    short statistics pass on the CPU)."""
    w = w.detach()
    if w.dtype != torch.float64:
        w = w.float()  # float32 pairwise sums of a row: ~1e-7 relative, no float64 copy of W
    return torch.mul(w, w).sum(dim).to(torch.float64).sqrt_()


def _abs_mean(w: torch.Tensor, dim: int) -> torch.Tensor:
    w = w.detach()
    if w.dtype != torch.float64:
        w = w.float()
    return w.abs().sum(dim).to(torch.float64).div_(w.shape[dim])


def _pad_k(t: torch.Tensor, k: int, fill) -> np.ndarray:
    """[layers, rows<=k, neurons] host tensor -> [layers, neurons, k], padded when fewer windows than k."""
    arr = t.transpose(1, 2).numpy()
    if arr.shape[2] < k:
        pad = np.full(arr.shape[:2] + (k - arr.shape[2],), fill, dtype=arr.dtype)
        arr = np.concatenate([arr, pad], axis=2)
    return arr
