"""Writing what a run produced: the pruned model (physically smaller where it can be), its masks
(mask_file.py) and the result files. Output targets are checked before a run starts (`paths.check_model_folder`,
`paths.check_output_folder`, called by `data.inputs.check_inputs`) and once more here."""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from neuronrank.data.paths import atomic_write_bytes, atomic_write_json, check_model_folder, held, sweep_stale
from neuronrank.engine.models import decoder_layers, mlp_blocks
from neuronrank.prune.context import targets
from neuronrank.prune.mask_file import save_masks as write_masks
from neuronrank.errors import UserError
from neuronrank.prune.structured import slice_structured

PARTIAL = ".neuronrank-partial"  # marks a half-written model folder as ours to clean up


def check_bias_storable(model) -> None:
    """A model whose MLP got a bias (mean compensation) saves only where its config can say so: Llama's
    `mlp_bias` (the other families' MLPs have no bias option)."""
    if not hasattr(model.config, "mlp_bias"):
        raise UserError(f"a mean-compensated {type(model).__name__} cannot be saved: its config has no MLP bias "
                        "(Llama's mlp_bias); run without --save_model or without --compensate mean")


@torch.no_grad()
def carry_mlp_bias(model) -> bool:
    """Where mean compensation gave down_proj a bias: set the config's `mlp_bias` and give every MLP
    projection a bias (zero where it has none), so `from_pretrained` builds and loads the same model.
    -> whether any bias was there."""
    blocks = mlp_blocks(model)
    if all(b.down.bias is None for b in blocks):
        return False
    check_bias_storable(model)
    for b in blocks:
        for lin in (b.gate, b.up, b.down):
            if lin.bias is None:
                lin.bias = nn.Parameter(torch.zeros(lin.out_features, dtype=lin.weight.dtype,
                                                    device=lin.weight.device), requires_grad=False)
    model.config.mlp_bias = True
    return True


def save_model(model, tok, folder: str, info: dict, req) -> dict:
    """Structured with equal counts per layer: a physically smaller model; else the zeroed model. A mean
    compensation's bias is saved with it (`mlp_bias`)."""
    out = Path(folder).expanduser().resolve()
    check_model_folder(out)
    biased = carry_mlp_bias(model)
    note = "zeroed weights (same shapes)"
    if req.sparsity_type == "structured":
        kept = set(info["neurons_kept"].values())
        n_layers = len(decoder_layers(model))
        if len(info["neurons_kept"]) == n_layers and len(kept) == 1:
            slice_structured(model, {int(k): v for k, v in info["dropped"].items()})
            note = f"sliced: intermediate_size {kept.pop()}"
        else:
            note = ("zeroed weights (same shapes): layers keep different neuron counts"
                    + (" (pruning_last)" if len(info["neurons_kept"]) < n_layers else ""))
    if biased:
        note += "; MLP bias (mean compensation)"
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        # what a killed save left beside this one (ours only: marked, old, not locked)
        sweep_stale(out.parent, match=lambda p: p.name.endswith(".tmp") and (p / PARTIAL).exists())
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        (tmp / PARTIAL).touch()
        with held(tmp):
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            (tmp / PARTIAL).unlink()
            if out.exists():
                shutil.rmtree(out)
            tmp.rename(out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"cannot save the model to {out}: {e.strerror or e}") from e
    return {"path": str(out), "format": note}


def save_masks(model, path: str, info: dict, req) -> dict:
    """The masks of every linear the run pruned (the zeros of its weights), with what chose them."""
    linears = [t.module for t in targets(model, info["layers"], req.targets)]
    calib = {k: v for k, v in asdict(req.stats_request()).items()}
    protocol = {**calib, "calibration": "sequential" if req.sequential else "one-pass",
                "alpha": req.alpha, "beta": req.beta, "gamma": req.gamma}
    meta = {"method": req.prune_method, "ratio": req.sparsity_ratio, "type": req.sparsity_type,
            "group": req.comparison_group, "targets": req.targets, "layers": info["layers"],
            "model": req.model, "protocol": protocol}
    return write_masks(model, path, linears, meta)


def save_results(folder: str, params: dict, result: dict, sparsity: dict) -> dict:
    out = Path(folder).expanduser().resolve()
    try:
        atomic_write_json(out / "result.json", {"params": params, "result": result})
        frame = pd.DataFrame(sparsity["modules"])
        atomic_write_bytes(out / "sparsity.csv", frame.to_csv(index=False).encode())
    except OSError as e:
        raise UserError(f"cannot write results to {out}: {e.strerror or e}") from e
    return {"path": str(out)}
