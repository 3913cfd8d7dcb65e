"""Structured pruning: whole neurons (row i of gate/up and column i of down zeroed), ranked by the method's
neuron score (config/methods.py); the lowest `ratio` per layer, or one threshold across the pruned layers
with scope="global", by the method's tie rule; with mean compensation the pruned neurons' mean output is
added back as a down_proj bias first. `slice_structured` then removes them physically, for a smaller
saved model.

Tie rules (config/methods.py TIE_RULES):
    exact      exactly round(ratio × n) neurons per layer (or across the layers), ties to the lowest index
    upstream   FLAP's: per layer every neuron below the value at index int(ratio × n) of the sorted scores
               (its UL-UM structure; ties there are kept); across the layers its AL-AM threshold — the scores
               sorted descending, the position k whose count k + 1 is nearest to n·(1 − ratio) (float32,
               the first of two equally near), and every neuron strictly above the score at k kept: one
               fewer than the nearest count
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from neuronrank.analysis import scoring
from neuronrank.engine.models import mlp_blocks
from neuronrank.errors import UserError
from neuronrank.prune.context import MetricInputs


def prune_structured(model: nn.Module, req, stats, layers: list[int]) -> dict:
    """Zero the lowest-scoring `ratio` of neurons in each of `layers` (or one threshold across them with
    scope="global") by the method's neuron score -> {"layers", "neurons_kept", "dropped"}."""
    method = req.method
    if method.neuron_score is None:
        raise UserError(f"{req.prune_method} has no neuron score for structured pruning")
    ctx = MetricInputs(stats=stats, seed=req.seed, method=method, exponents=(req.alpha, req.beta, req.gamma),
                       model=model, fluctuation=req.fluctuation or "flap")
    scores = method.neuron_score(ctx)
    drop = neurons_to_drop(scores[layers], req.sparsity_ratio, req.structured_scope, req.tie_rule)
    kept = {}
    blocks = {b.layer: b for b in mlp_blocks(model)}
    if req.compensation == "mean":
        from neuronrank.prune.compensate import add_mean_bias

        add_mean_bias([blocks[l] for l in layers], drop, stats)  # before the columns of W_down are zeroed
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


def neurons_to_drop(scores: np.ndarray, ratio: float, scope: str, rule: str = "exact") -> np.ndarray:
    """[layers, width] neuron scores -> bool [layers, width], True = removed (the module docstring's rules)."""
    if rule == "exact":
        layer_ids = np.repeat(np.arange(scores.shape[0]), scores.shape[1])
        return scoring.lowest(scores.ravel(), layer_ids, ratio, per_layer=scope == "layer").reshape(scores.shape)
    s = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))
    if scope == "layer":
        k = int(s.shape[1] * ratio)
        return (s < torch.sort(s, dim=1).values[:, k:k + 1]).numpy()
    flat = s.reshape(-1)
    ordered = torch.sort(flat, descending=True).values
    target = torch.tensor(flat.numel()) * (1 - ratio)  # float32, as FLAP's
    k = torch.argmin(torch.abs(torch.arange(1, flat.numel() + 1) - target))
    return (~(s > ordered[k])).numpy()


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
