"""Pruning a model in place as a PruneRequest says, and what it left.

    prune(model, req, stats, windows)   one-pass (one_pass.py, from statistics collected once on the
                                        dense model), structured (structured.py) or layer by layer
                                        (sequential.py, from the calibration windows)
    sparsity_report(model)              the exact fraction of zero weights per layer and module

Every method is one entry of the registry in config/methods.py; the masks and their tie rules are
masks.py's, the linears a method may touch and the scorers' context are context.py's, OWL's layer
sparsities layer_sparsity.py's, mean compensation compensate.py's. `last` restricts pruning to the last N
decoder layers.
"""

from __future__ import annotations

import torch
from torch import nn

from neuronrank.engine.models import decoder_layers, mlp_blocks
from neuronrank.errors import UserError
from neuronrank.prune.context import ATTN_KINDS, MLP_KINDS, targets
from neuronrank.prune.layer_sparsity import owl_layer_sparsity
from neuronrank.prune.one_pass import prune_targets
from neuronrank.prune.sequential import prune_sequential
from neuronrank.prune.structured import prune_structured


@torch.no_grad()
def prune(model: nn.Module, req, stats=None, windows: torch.Tensor | None = None, prepared=None) -> dict:
    """Prune `model` in place as `req` says; -> {"layers", "neurons_kept" and "dropped" (structured),
    "owl" (OWL's outlier ratios and layer sparsities)}.

    One-pass calibration: from `stats` (collected once on the dense model). Sequential calibration
    (and sparsegpt, always): layer by layer from the calibration `windows` [N, seqlen]; OWL's ratios
    and mean compensation always come from the dense model's `stats` (req.needs_statistics). `prepared`
    (incremental.ScaledMasks of the model's dense weights): the same masks, faster, for a search's trials."""
    n_layers = len(decoder_layers(model))
    req.validate(n_layers)
    if req.needs_statistics and stats is None:
        raise UserError(f"{req.prune_method} needs calibration statistics")
    if req.needs_down_moments and not stats.has_down_moments:
        raise UserError("these statistics predate the down_proj input moments (mean, fluctuation); compute "
                        "them again")
    if stats is not None and stats.n_layers != n_layers:
        raise UserError("the statistics were collected on a different model (layer count differs)")
    layers = req.pruned_layers(n_layers)
    owl = owl_layer_sparsity(model, req, stats, layers) if req.owl else None
    ratios = dict(zip(owl["layers"], owl["sparsity"])) if owl else None
    if req.sequential:
        if windows is None:
            raise UserError(f"{req.prune_method} with sequential calibration needs the calibration windows")
        info = prune_sequential(model, req, windows, ratios=ratios)
    elif req.sparsity_type == "structured":
        info = prune_structured(model, req, stats, layers)
    else:
        prune_targets(targets(model, layers, req.targets), req, stats, ratios=ratios, prepared=prepared)
        info = {"layers": layers}
    if owl:
        info["owl"] = owl
    return info


@torch.no_grad()
def sparsity_report(model: nn.Module) -> dict:
    """Exact fraction of zero weights per layer and module, and totals over the decoder's linears."""
    rows = []
    for b in mlp_blocks(model):
        mods = {"gate": b.gate, "up": b.up, "down": b.down, **b.attn_projections}
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
