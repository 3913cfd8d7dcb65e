"""Pruning: methods are small metric functions in a registry; one loop applies any of them.

Unstructured (and N:M): each target weight W_jk gets a metric; the lowest `ratio` fraction of each
comparison group is zeroed. Groups: `matrix` (one threshold per matrix — the original NeuronRank-OLD
and magnitude semantics, the default), `row` (per output row, Wanda's), or N:M blocks of M consecutive
inputs in every row.

    magnitude       |W_jk|
    wanda           |W_jk| · ‖X_k‖₂             (input norms from the same calibration pass)
    neuronrank_old  |W_jk| · score_i            (i = the neuron: row of gate/up, column of down)
    random          uniform noise, seeded       (the control every paper needs)
    sparsegpt       OBS reconstruction per layer (sparsegpt.py; always sequential, sequential.py)

Structured: whole neurons (row i of gate/up and column i of down zeroed), ranked by a neuron score:
NeuronRank-OLD's score, magnitude ‖gate row‖₂ (the |W| factor alone), wanda_sp (FLAP:
mean_r |W_down[r, i]| · ‖x_i‖₂), or random; the lowest `ratio` per layer, or one threshold across the
pruned layers with scope="global". `last` restricts pruning to the last N decoder layers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from neuronrank.analysis import scoring
from neuronrank.errors import UserError
from neuronrank.engine.models import decoder_layers, mlp_blocks
from neuronrank.config.requests import GROUPS, SPARSITY_TYPES, PruneRequest, nm  # noqa: F401
from neuronrank.config.requests import METHODS as METHOD_INFO
from neuronrank.config.requests import MethodInfo

log = logging.getLogger(__name__)

MLP_KINDS = ("gate", "up", "down")
ATTN_KINDS = ("q", "k", "v", "o")
_INPUT_NORM = {"gate": "mlp_in", "up": "mlp_in", "down": "down_in", "q": "attn_in", "k": "attn_in",
               "v": "attn_in", "o": "o_in"}


@dataclass(frozen=True)
class Target:
    layer: int
    kind: str  # module kind: gate | up | down | q | k | v | o
    module: nn.Linear

    @property
    def neuron_axis(self) -> int | None:
        """Axis of W that indexes MLP neurons: rows of gate/up, columns of down; None for attention."""
        return {"gate": 0, "up": 0, "down": 1}.get(self.kind)


@dataclass
class MetricInputs:
    """What a metric may use. `neuron_scores[layer]` is set for neuronrank_old."""

    stats: object | None = None  # NeuronStats
    neuron_scores: np.ndarray | None = None  # [layers, width]
    seed: int = 0

    def input_norm(self, t: Target, device) -> torch.Tensor:
        if self.stats is None:
            raise UserError("this method needs calibration statistics")
        key = _INPUT_NORM[t.kind]
        if key not in self.stats.input_sq:
            raise UserError(f"the statistics have no input norms for {t.kind}_proj")
        # ‖X‖ as upstream Wanda computes it: a float32 square root of the float32 sum (a float64 root
        # rounded to float32 differs in the last bit often enough to flip near-ties of |W|·‖X‖)
        return torch.sqrt(torch.from_numpy(self.stats.input_sq[key][t.layer]).to(device, torch.float32))

    def generator(self, t: Target) -> torch.Generator:
        g = torch.Generator()
        # deterministic across processes (Python's str hash is salted per process)
        g.manual_seed((self.seed * 1_000_003 + t.layer * 16 + (MLP_KINDS + ATTN_KINDS).index(t.kind)) & 0x7FFF_FFFF)
        return g


@dataclass(frozen=True)
class Method:
    name: str
    metric: Callable[[torch.Tensor, Target, MetricInputs], torch.Tensor]
    info: MethodInfo  # needs_stats, mlp_only, uses_exponents (declared in neuronrank.requests)

    @property
    def needs_stats(self) -> bool:
        return self.info.needs_stats


METHODS: dict[str, Method] = {}


def register(name: str):
    """Add a metric to the registry; the method must be declared in `requests.METHODS`."""
    def wrap(fn):
        METHODS[name] = Method(name, fn, METHOD_INFO[name])
        return fn

    return wrap


# Metrics get the weight in its own dtype. |W| is exact in any float format, so magnitude compares
# the weights themselves (a bf16 sort is half the bytes); products with float32 factors promote to
# float32 and equal float32(W).abs() * factor bit for bit, without a float32 copy of W first.


@register("magnitude")
def _magnitude(w, t, ctx):
    return w.abs() if w.dtype != torch.float64 else w.float().abs()


@register("wanda")
def _wanda(w, t, ctx):
    return torch.mul(w.abs(), ctx.input_norm(t, w.device)[None, :].to(_metric_dtype(w)))


@register("neuronrank_old")
def _neuronrank_old(w, t, ctx):
    s = torch.from_numpy(ctx.neuron_scores[t.layer]).to(w.device, _metric_dtype(w))
    return torch.mul(w.abs(), s[:, None] if t.neuron_axis == 0 else s[None, :])


def _metric_dtype(w: torch.Tensor) -> torch.dtype:
    return torch.float32  # what the metrics have always been computed in (masks stay identical)


@register("random")
def _random(w, t, ctx):
    return torch.rand(w.shape, generator=ctx.generator(t)).to(w.device)


@register("sparsegpt")
def _sparsegpt(w, t, ctx):
    # SparseGPT is no metric: it reconstructs the kept weights layer by layer (sequential.py)
    raise UserError("sparsegpt prunes layer by layer from calibration windows (sequential calibration)")


# ----------------------------------------------------------------------------------------------
# the plan


def targets(model: nn.Module, layers: list[int], which: str = "mlp") -> list[Target]:
    out = []
    for b in mlp_blocks(model):
        if b.layer not in layers:
            continue
        out += [Target(b.layer, "gate", b.gate), Target(b.layer, "up", b.up), Target(b.layer, "down", b.down)]
        if which == "all":
            out += [Target(b.layer, k, b.attn[k]) for k in ATTN_KINDS if k in b.attn]
    return out


def neuron_scores(method: str, stats=None, model: nn.Module | None = None, alpha=1.0, beta=1.0, gamma=1.0,
                  seed: int = 0) -> np.ndarray:
    """[layers, width] neuron importance for structured pruning (and for NeuronRank's weight metric)."""
    if method == "neuronrank_old":
        return scoring.score(stats, alpha, beta, gamma).reshape(stats.n_layers, stats.width)
    if method == "wanda":  # FLAP's wanda_sp: mean_r |W_down[r, i]| * ||x_i||
        return stats.down_abs_mean * stats.input_norm("down_in")
    if method == "magnitude":
        if stats is not None:
            return stats.w_norm
        return np.stack([torch.linalg.vector_norm(b.gate.weight.detach(), dim=1, dtype=torch.float64).cpu().numpy()
                         for b in mlp_blocks(model)])
    if method == "random":
        blocks = mlp_blocks(model) if model is not None else None
        shape = (stats.n_layers, stats.width) if stats is not None else (len(blocks), blocks[0].width)
        return np.random.default_rng(seed).random(shape)
    raise UserError(f"unknown pruning method {method!r}")


# ----------------------------------------------------------------------------------------------
# masks


def lowest_mask(metric: torch.Tensor, ratio: float, sparsity_type: str = "unstructured",
                group: str = "matrix") -> torch.Tensor:
    """Boolean mask (True = prune) of exactly round(ratio × group size) lowest entries of each group."""
    mask = torch.zeros(metric.shape, dtype=torch.bool, device=metric.device)
    if (":" in sparsity_type or group == "row") and metric.dtype in (torch.float16, torch.bfloat16):
        metric = metric.float()  # topk's tie order per dtype: keep these paths' masks as they were
    if ":" in sparsity_type:
        n, m = nm(sparsity_type)
        rows, cols = metric.shape
        if cols % m:
            raise UserError(f"{sparsity_type} needs the input size ({cols}) to be a multiple of {m}")
        blocks = metric.reshape(rows, cols // m, m)
        idx = blocks.topk(n, dim=2, largest=False).indices
        return mask.reshape(rows, cols // m, m).scatter_(2, idx, True).reshape(rows, cols)
    if group == "row":  # upstream Wanda's rule: a stable sort, ties pruned lowest index first
        k = int(round(ratio * metric.shape[1]))
        if k:
            mask.scatter_(1, torch.sort(metric, dim=1, stable=True).indices[:, :k], True)
        return mask
    k = int(round(ratio * metric.numel()))
    if not k:
        return mask
    return lowest_k_flat(metric.reshape(-1), k).view(metric.shape)


def lowest_k_flat(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of exactly the k smallest entries of a 1-D tensor, ties at the threshold broken towards
    the lowest index (deterministic on every device).

    A threshold and comparisons instead of topk(k) with k ~ half a 45M-element matrix (which
    materialises k sorted values and indices and scatters them): the k-th value by selection on a CPU
    (kthvalue), by one radix sort on a GPU (kthvalue there is a one-block-per-slice kernel); then every
    entry below it, plus the first (k - #below) entries equal to it. No host sync.
    """
    n = flat.numel()
    if k >= n:
        return torch.ones_like(flat, dtype=torch.bool)
    if flat.is_cuda:
        t = torch.sort(flat).values[k - 1]
    else:
        t = torch.kthvalue(flat, k).values
    below = flat < t
    eq = flat == t
    need = k - below.sum()
    idx_dtype = torch.int32 if n < 2**31 else torch.int64
    return below.logical_or_(eq.logical_and_(eq.cumsum(0, dtype=idx_dtype) <= need))


@torch.no_grad()
def prune(model: nn.Module, req: PruneRequest, stats=None, windows: torch.Tensor | None = None) -> dict:
    """Prune `model` in place as `req` says; -> {"layers", "neurons_kept" and "dropped" (structured)}.

    One-pass calibration: from `stats` (collected once on the dense model). Sequential calibration
    (and sparsegpt, always): layer by layer from the calibration `windows` [N, seqlen]."""
    n_layers = len(decoder_layers(model))
    req.validate(n_layers)
    method = METHODS[req.prune_method]
    if req.sequential:
        if windows is None:
            raise UserError(f"{req.prune_method} with sequential calibration needs the calibration windows")
        from neuronrank.prune.sequential import prune_sequential

        return prune_sequential(model, req, windows)
    if method.needs_stats and stats is None:
        raise UserError(f"{req.prune_method} needs calibration statistics")
    if stats is not None and stats.n_layers != n_layers:
        raise UserError("the statistics were collected on a different model (layer count differs)")
    layers = req.pruned_layers(n_layers)
    if req.sparsity_type == "structured":
        return _prune_structured(model, req, stats, layers)
    prune_targets(targets(model, layers, req.targets), req, stats)
    return {"layers": layers}


def prune_targets(ts: list[Target], req: PruneRequest, stats=None) -> None:
    """Zero the lowest-metric weights of each target (t.layer indexes `stats`)."""
    method = METHODS[req.prune_method]
    inputs = MetricInputs(stats=stats, seed=req.seed)
    if req.prune_method == "neuronrank_old":
        inputs.neuron_scores = neuron_scores("neuronrank_old", stats, None, req.alpha, req.beta, req.gamma)
    for t in ts:
        w = t.module.weight
        metric = method.metric(w.detach(), t, inputs)
        w.masked_fill_(lowest_mask(metric, req.sparsity_ratio, req.sparsity_type, req.comparison_group), 0)


def _prune_structured(model, req: PruneRequest, stats, layers: list[int]) -> dict:
    scores = neuron_scores(req.prune_method, stats, model, req.alpha, req.beta, req.gamma, req.seed)
    sub = scores[layers]
    layer_ids = np.repeat(np.arange(len(layers)), sub.shape[1])
    drop = scoring.lowest(sub.ravel(), layer_ids, req.sparsity_ratio, per_layer=req.scope == "layer")
    drop = drop.reshape(sub.shape)
    kept = {}
    blocks = {b.layer: b for b in mlp_blocks(model)}
    for row, layer in enumerate(layers):
        b = blocks[layer]
        gone = torch.from_numpy(drop[row]).to(b.gate.weight.device)
        b.gate.weight[gone] = 0
        b.up.weight[gone] = 0
        b.down.weight[:, gone] = 0
        for lin in (b.gate, b.up):
            if lin.bias is not None:
                lin.bias[gone] = 0
        kept[layer] = int((~drop[row]).sum())
    return {"layers": layers, "neurons_kept": kept, "dropped": {l: np.flatnonzero(drop[r]).tolist()
                                                                for r, l in enumerate(layers)}}


# ----------------------------------------------------------------------------------------------
# what pruning left


@torch.no_grad()
def sparsity_report(model: nn.Module) -> dict:
    """Exact fraction of zero weights per layer and module, and totals over the decoder's linears."""
    rows = []
    for b in mlp_blocks(model):
        mods = {"gate": b.gate, "up": b.up, "down": b.down, **b.attn}
        for kind, lin in mods.items():
            zeros = int((lin.weight == 0).sum())
            rows.append({"layer": b.layer, "module": kind, "zeros": zeros, "numel": lin.weight.numel(),
                         "fraction": zeros / lin.weight.numel()})

    def total(sel):
        z = sum(r["zeros"] for r in rows if sel(r))
        n = sum(r["numel"] for r in rows if sel(r))
        return z / n if n else 0.0

    return {"modules": rows, "mlp": total(lambda r: r["module"] in MLP_KINDS),
            "attention": total(lambda r: r["module"] in ATTN_KINDS), "all_linear": total(lambda r: True)}


@torch.no_grad()
def slice_structured(model: nn.Module, dropped: dict[int, list[int]]) -> None:
    """Physically remove dropped neurons so `save_pretrained` writes a smaller model.

    Only when every layer keeps the same number of neurons: configs have one intermediate_size.
    """
    blocks = mlp_blocks(model)
    widths = {b.width - len(dropped.get(b.layer, [])) for b in blocks}
    if len(widths) != 1:
        raise UserError("layers keep different neuron counts; a sliced model needs one intermediate size")
    for b in blocks:
        keep = torch.ones(b.width, dtype=torch.bool)
        keep[list(dropped.get(b.layer, []))] = False
        idx = keep.nonzero().squeeze(1).to(b.gate.weight.device)
        b.module.gate_proj = _take(b.gate, idx, 0)
        b.module.up_proj = _take(b.up, idx, 0)
        b.module.down_proj = _take(b.down, idx, 1)
    model.config.intermediate_size = widths.pop()


def _take(lin: nn.Linear, idx: torch.Tensor, axis: int) -> nn.Linear:
    w = lin.weight.index_select(axis, idx)
    out = nn.Linear(w.shape[1], w.shape[0], bias=lin.bias is not None, device=w.device, dtype=w.dtype)
    out.weight.copy_(w)
    if lin.bias is not None:
        out.bias.copy_(lin.bias.index_select(0, idx) if axis == 0 else lin.bias)
    return out


# every declared method has a metric, and every metric is declared
assert set(METHODS) == set(METHOD_INFO), "pruning.METHODS and requests.METHODS disagree"
