"""OWL's layer-wise sparsity (Yin et al. 2024, "Outlier Weighed Layerwise sparsity"): each decoder layer gets
its own sparsity from how many outliers its metric has, the mean over the layers staying at the request's.

    D_l     the layer's outlier ratio (in %): the fraction of its metric entries above M × their mean (one
            float32 mean over the concatenation of the layer's matrices, strict >)
    keep_l  (D_l - min D) · (1 / (max D - min D) · λ · 2), minus its mean, plus (1 - S)   (float64, OWL's order)
    s_l     1 - keep_l, or 0.01 where that is <= 0 (OWL's guard); a layer prunes int(n · s_l) of each
            comparison group (the tie rule "upstream", OWL's)

The metric is Wanda's |W_jk| · ‖X_k‖₂ over every linear of the layer (q, k, v, o, gate, up, down — also when
only the MLP is pruned, and for magnitude, RIA and SparseGPT, as OWL's code computes it), from one-pass
statistics of the dense model (OWL computes D in a pass over the unpruned model before it prunes). For
neuronrank_old it is the method's own |W_jk| · score_i over its gate, up and down matrices (its score
addresses MLP neurons only): a choice of this project, not OWL's. With every D equal (one pruned layer, say)
the sparsity is uniform.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import nn

from neuronrank.config.methods import METHODS
from neuronrank.engine.models import mlp_blocks
from neuronrank.errors import UserError
from neuronrank.prune.context import MetricInputs, Target

OWL_ORDER = ("q", "k", "v", "o", "gate", "up", "down")  # a decoder layer's linears in module order
MIN_SPARSITY = 0.01  # OWL's guard for a layer whose keep ratio reaches 1


def outlier_ratio(metrics: list[torch.Tensor], m: float) -> float:
    """D (in %): the fraction of all entries above m × their mean (one float32 mean of the concatenation)."""
    flat = torch.cat([x.float().reshape(-1).cpu() for x in metrics])
    return float((flat > torch.mean(flat) * m).sum().item()) / flat.numel() * 100


def layer_outlier_ratios(model: nn.Module, req, stats, layers: list[int]) -> list[float]:
    """D_l of each of `layers` by the method's outlier metric (the module docstring)."""
    method = req.method
    own = method.outlier_metric == "own"
    metric = method if own else METHODS["wanda"]
    if not own and stats.has_down_moments:
        # Wanda's ‖X‖² as OWL holds it (WrappedGPT's scaler_row): the mean over windows of each window's Σx².
        # The scale cancels in "> M × mean", but float32 rounds the metric differently at another scale,
        # which moved a D_l by one entry (and the ratios in the 6th digit) against OWL's code
        n = stats.fluct["n"].astype(np.float64)
        stats = replace(stats, input_sq={k: v / n[:, None] for k, v in stats.input_sq.items()})
    ctx = MetricInputs(stats=stats, seed=req.seed, method=method, exponents=(req.alpha, req.beta, req.gamma))
    blocks = {b.layer: b for b in mlp_blocks(model)}
    out = []
    for layer in layers:
        b = blocks[layer]
        mods = {"gate": b.gate, "up": b.up, "down": b.down, **b.attn_projections}
        kinds = ("gate", "up", "down") if own else [k for k in OWL_ORDER if k in mods]
        out.append(outlier_ratio([metric.metric(mods[k].weight.detach(), Target(layer, k, mods[k]), ctx)
                                  for k in kinds], req.owl_m))
    return out


def owl_keep_ratios(d: list[float], sparsity: float, lam: float) -> np.ndarray:
    """OWL's layer keep ratios from the outlier ratios D (float64, in OWL's order of operations)."""
    d = np.array(d, dtype=np.float64)
    if d.size == 0 or d.max() == d.min():  # OWL divides by max - min: equal ratios keep the uniform sparsity
        return np.full(d.shape, 1 - float(sparsity))
    keep = (d - d.min()) * (1 / (d.max() - d.min()) * lam * 2)
    return keep - np.mean(keep) + (1 - sparsity)


def owl_layer_sparsity(model: nn.Module, req, stats, layers: list[int]) -> dict:
    """{"layers", "outlier_percent": [D_l], "keep": [keep_l], "sparsity": [s_l]} for `layers` (in order),
    from dense one-pass statistics."""
    if stats is None:
        raise UserError("--layer-sparsity owl needs one-pass calibration statistics of the dense model")
    d = layer_outlier_ratios(model, req, stats, layers)
    keep = owl_keep_ratios(d, req.sparsity_ratio, req.owl_lam)
    s = 1 - keep
    return {"layers": list(layers), "outlier_percent": d, "keep": keep.tolist(),
            "sparsity": np.where(s <= 0, MIN_SPARSITY, s).tolist()}
