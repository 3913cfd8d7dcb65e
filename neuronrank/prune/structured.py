"""Structured pruning: whole neurons (row i of gate/up and column i of down zeroed), ranked by the method's
neuron score (config/methods.py); the lowest `ratio` per layer, or one threshold across the pruned layers
with scope="global". `slice_structured` then removes them physically, for a smaller saved model.
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
                       model=model)
    scores = method.neuron_score(ctx)
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
