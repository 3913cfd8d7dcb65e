"""The statistics pass's hooks and accumulators: one LayerAccumulator per decoder layer gathers, on the
layer's device, the sums of its MLP activations and of its linears' inputs; `finish` turns them into
NeuronStats. Public: the one-pass statistics (collect.py) and the layer-by-layer calibration
(prune/sequential.py) share them.

Activation sites (TransformerLens names in brackets):
- `gate`    a = act_fn(gate_proj(x))                 [act_fn(blocks.L.mlp.hook_pre)] — the original method
- `product` a = act_fn(gate_proj(x)) * up_proj(x)    [blocks.L.mlp.hook_post] — the input of down_proj

Whatever the site, the down_proj input's moments are kept too: Σx per neuron (its mean, which mean
compensation adds back as a bias) and the terms of FLAP's fluctuation, an order-dependent running
statistic over the windows (`DownMoments`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from neuronrank.analysis.neuron_stats import FORMAT_VERSION, INPUT_NORMS, NeuronStats
from neuronrank.engine.kernels import NativeKernels, activation_sums, sq_sum_rows, window_sums
from neuronrank.engine.models import GatedMLP


# rows of LayerAccumulator.sums: Σa, Σ|a|, Σa², n_active (float64 holds counts exactly up to 2^53)
_SUM_ACT, _SUM_ABS, _SUM_SQ, _N_ACTIVE = range(4)


class DownMoments:
    """The down_proj input's Σx and the terms of FLAP's fluctuation over the windows k = 1..N seen so far
    (float64, on the layer's device).

    FLAP's estimator (its BiasGPT, one window per call) is, in closed form, with T tokens per window,
    μ_k the running mean after k windows, P_k = Σ_t x_kt and Q_k = Σ_t x_kt² of window k:

        fluc = 1/(N-1) · Σ_k (k-1)/k · S_k,   S_k = Σ_t (x_kt - μ_k)² = Q_k - 2 μ_k P_k + T μ_k²

    A shard of windows starting after a prefix whose Σx is C0 (unknown until the shards are combined)
    has μ_k = u_k (C0 + c_k), u_k = 1/(kT), c_k its own prefix sum, so its part of the sum is
    a + b·C0 + d·C0² with
        a = Σ w_k (Q_k - 2 u_k c_k P_k + T u_k² c_k²),  b = Σ w_k (2 T u_k² c_k - 2 u_k P_k),  d = Σ w_k T u_k²
    (w_k = (k-1)/k, k global). Shards combine exactly (analysis.neuron_stats.fold_fluctuation); one pass
    is the shard with C0 = 0: fluc = a / (N - 1). `c` is the shard's Σx (the mean's sum)."""

    def __init__(self, n: int, device):
        f64 = dict(dtype=torch.float64, device=device)
        self.c, self.a, self.b = (torch.zeros(n, **f64) for _ in range(3))
        self.d = torch.zeros((), **f64)
        self.windows = 0

    def add(self, s1: torch.Tensor, s2: torch.Tensor, first: int, T: int, fused=None) -> None:
        """Windows first+1 .. first+W (global, 1-based) with per-window sums s1, s2 [W, n]. With the native
        kernels one call (the ~25 small tensor operations below cost ~0.1 ms per layer and batch)."""
        if isinstance(fused, NativeKernels) and fused.down_moments(self, s1, s2, first, T):
            self.windows += s1.shape[0]
            return
        k = torch.arange(1, s1.shape[0] + 1, dtype=torch.float64, device=s1.device).add_(first)[:, None]
        w, u = (k - 1) / k, 1.0 / (k * T)
        c = self.c + s1.cumsum(0)
        self.a += (w * (s2 - 2 * u * c * s1 + T * u * u * c * c)).sum(0)
        self.b += (w * (2 * T * u * u * c - 2 * u * s1)).sum(0)
        self.d += (w * T * u * u).sum()
        self.c = c[-1].clone()
        self.windows += s1.shape[0]


class LayerAccumulator:
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
        self.down = DownMoments(n, device)
        if "q" in block.attn_projections:
            self.input_sq["attn_in"] = torch.zeros(block.attn_projections["q"].in_features, **f64)
        if "o" in block.attn_projections:
            self.input_sq["o_in"] = torch.zeros(block.attn_projections["o"].in_features, **f64)
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
        self.pending[name] = self.fused.sq(x) if self.fused is not None else sq_sum_rows(x)

    def add_down_input(self, x: torch.Tensor) -> None:
        """The down_proj input: its ‖x‖² (Wanda's, as add_input) and its per-window moments."""
        x3 = x.reshape(-1, self.seqlen, x.shape[-1])
        if self.skip_first:
            x3 = x3[:, self.skip_first:]
        s1, s2 = self.fused.window_sums(x3) if self.fused is not None else window_sums(x3)
        self.pending["down_moments"] = (s1, s2, x3.shape[1])
        if self.running_mean:
            self.add_input("down_in", x)
        else:  # the total is the windows' sum: no second pass over the input
            self.pending["down_in"] = s2.sum(0)

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
        if "down_moments" in p:
            s1, s2, T = p["down_moments"]
            self.down.add(s1, s2, self.window_offset, T, self.fused)
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


def install_hooks(acc: LayerAccumulator, shared_act: bool) -> list:
    """The hooks that feed `acc` from its block (remove them when the pass ends); `shared_act`: one act_fn
    module serves several layers, so its output cannot tell them apart."""
    # Hooks return None: returning a tensor would replace the module's output.
    b = acc.block
    hs = [b.gate.register_forward_pre_hook(lambda m, args: acc.add_input("mlp_in", args[0])),
          b.down.register_forward_pre_hook(lambda m, args: _down_input(acc, args[0]))]
    if "q" in b.attn_projections:
        hs.append(b.attn_projections["q"].register_forward_pre_hook(lambda m, args: acc.add_input("attn_in", args[0])))
    if "o" in b.attn_projections:
        hs.append(b.attn_projections["o"].register_forward_pre_hook(lambda m, args: acc.add_input("o_in", args[0])))
    if acc.site == "gate":
        if isinstance(b.act_fn, nn.Module) and not shared_act:
            # the act_fn module's own output: no recomputation
            hs.append(b.act_fn.register_forward_hook(lambda m, args, out: acc.add_activation(out)))
        else:
            # act_fn shared between layers, or a plain function: recompute it from gate_proj's output
            hs.append(b.gate.register_forward_hook(lambda m, args, out: acc.add_activation(b.act_fn(out))))
    return hs


def _down_input(acc: LayerAccumulator, p: torch.Tensor) -> None:
    acc.add_down_input(p)
    if acc.site == "product":
        acc.add_activation(p)


def finish(accs, blocks, site, windows, first_window, seqlen) -> NeuronStats:
    """The accumulators of a pass (one per block, in layer order) -> NeuronStats on the host."""
    # Stack every field on its device and copy each once: a handful of host syncs per pass, not
    # one per layer and field (that was ~480 on a 32-layer model).
    host = lambda ts: torch.stack([t.to(ts[0].device) for t in ts]).cpu()  # noqa: E731
    np64 = lambda ts: host(ts).to(torch.float64).numpy()  # noqa: E731
    names = [n for n in INPUT_NORMS if all(n in a.input_sq for a in accs)]
    k = accs[0].k
    sums = np64([a.sums for a in accs])  # [layers, 4, neurons]
    norms = [_weight_norms(b, a.fused) for a, b in zip(accs, blocks)]
    return NeuronStats(
        site=site,
        sum_abs=sums[:, _SUM_ABS],
        sum_act=sums[:, _SUM_ACT],
        sum_sq=sums[:, _SUM_SQ],
        n_active=np.rint(sums[:, _N_ACTIVE]).astype(np.int64),
        tokens=np.array([a.tokens for a in accs], dtype=np.int64),
        w_norm=np64([n[0] for n in norms]),
        up_norm=np64([n[1] for n in norms]),
        down_norm=np64([n[2] for n in norms]),
        down_abs_mean=np64([n[3] for n in norms]),
        input_sq={n: np64([a.input_sq[n] for a in accs]) for n in names},
        input_sum={"down_in": np64([a.down.c for a in accs])},
        fluct={"a": np64([a.down.a for a in accs]), "b": np64([a.down.b for a in accs]),
               "d": np64([a.down.d for a in accs]),
               "n": np.array([a.down.windows for a in accs], dtype=np.int64)},
        top_vals=_pad_k(host([a.top_vals for a in accs]), k, -np.inf, np.float32),
        top_window=_pad_k(host([a.top_window for a in accs]), k, -1, np.int32),
        top_pos=_pad_k(host([a.top_pos for a in accs]), k, -1, np.int32),
        windows=windows,
        first_window=first_window,
        meta={"format_version": FORMAT_VERSION, "site": site, "seqlen": seqlen, "topk": k},
    )


def _weight_norms(b: GatedMLP, fused=None) -> tuple:
    """(‖gate row‖, ‖up row‖, ‖down column‖, mean |down column|), float64, per neuron. With the native
    kernels: one read of each matrix; else torch's reductions. Reading every MLP weight is a fixed cost of
    each pass, bound by memory bandwidth (~10 ms for the embedded model on the 2-core dev CPU)."""
    gate, up, down = (m.weight.detach() for m in (b.gate, b.up, b.down))
    if isinstance(fused, NativeKernels):
        g, u, d = fused.weight_sq(gate, 1), fused.weight_sq(up, 1), fused.weight_abs_sq_cols(down)
        if g is not None and u is not None and d is not None:
            return g.sqrt_(), u.sqrt_(), d[1].sqrt_(), d[0].div_(down.shape[0])
    return _weight_norm(gate, 1), _weight_norm(up, 1), _weight_norm(down, 0), _abs_mean(down, 0)


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


def _pad_k(t: torch.Tensor, k: int, fill, dtype) -> np.ndarray:
    """[layers, rows<=k, neurons] host tensor -> [layers, neurons, k] of `dtype`, padded with `fill` when fewer
    windows than k (one write of the result: no transposed copy, no concatenation)."""
    arr = t.numpy()
    out = np.full((arr.shape[0], arr.shape[2], k), fill, dtype=dtype)
    out[:, :, :arr.shape[1]] = arr.transpose(0, 2, 1)
    return out
