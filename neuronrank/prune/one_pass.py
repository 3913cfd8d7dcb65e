"""One-pass pruning: each target's weights get the method's metric (config/methods.py) from statistics
collected once, and the lowest of each comparison group are zeroed (masks.py). The layer-by-layer path
(sequential.py) applies the same to one layer at a time."""

from __future__ import annotations

from neuronrank.errors import UserError
from neuronrank.prune.context import MetricInputs, Target
from neuronrank.prune.masks import lowest_mask, zero_masked_


def prune_targets(ts: list[Target], req, stats=None, ratios: dict[int, float] | None = None,
                  prepared=None) -> None:
    """Zero the lowest-metric weights of each target (t.layer indexes `stats`); `ratios` {t.layer: sparsity}
    (OWL's layer sparsities), else the request's ratio everywhere. `prepared`: an incremental.ScaledMasks
    built from these (dense) weights, which gives the same masks faster where it applies (one ratio for
    every layer, the exact tie rule)."""
    method = req.method
    if method.metric is None:
        raise UserError(f"{req.prune_method} has no per-weight metric: it prunes layer by layer")
    ctx = MetricInputs(stats=stats, seed=req.seed, method=method, exponents=(req.alpha, req.beta, req.gamma))
    fast = prepared is not None and ratios is None and req.tie_rule == "exact" and prepared.covers(req)
    for t in ts:
        w = t.module.weight
        mask = prepared.mask(t, req, ctx.neuron_factor(t, w.device)) if fast else None
        if mask is None:
            metric = method.metric(w.detach(), t, ctx)
            ratio = req.sparsity_ratio if ratios is None else ratios[t.layer]
            mask = lowest_mask(metric, ratio, req.sparsity_type, req.comparison_group, req.tie_rule)
        zero_masked_(w, mask)
