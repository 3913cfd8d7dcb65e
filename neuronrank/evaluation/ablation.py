"""Role ablation on a loaded model: zero a set of MLP neurons, measure perplexity, put them back.

    with zeroed(model, {layer: neuron indices}):     rows of gate_proj and up_proj (and their biases) and
        ...                                          the columns of down_proj are 0 inside the block
                                                     and bit for bit the dense weights after it
    ablate(model, tok, req, stats, identity)         every class (per layer band), its random controls and
                                                     the single neurons of an AblateRequest -> the result

One ablation is one perplexity evaluation of the dense weights with the neurons zeroed — no model reload, no
re-calibration. Only the touched rows and columns are copied (a class of a few hundred neurons copies a
few MB, not the model), and they are restored even when the evaluation raises (a cancelled run leaves
a dense model). The evaluation windows are tokenized once and shared by every ablation.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Iterator, Mapping

import numpy as np
import torch
from torch import nn

from neuronrank.analysis import ablation, scoring
from neuronrank.analysis.numbers import finite
from neuronrank.engine import models
from neuronrank.engine.models import mlp_blocks
from neuronrank.engine.windows import evaluation_set
from neuronrank.errors import UserError
from neuronrank.evaluation.perplexity import measure_ppl, perplexity
from neuronrank.runs.progress import token_progress

log = logging.getLogger(__name__)


@contextlib.contextmanager
def zeroed(model: nn.Module, neurons: Mapping[int, np.ndarray | list[int]]) -> Iterator[int]:
    """Inside the block, every neuron in `neurons` ({layer: indices}) is removed from the model's MLP;
    yields how many neurons were zeroed."""
    blocks = {b.layer: b for b in mlp_blocks(model)}
    saved = []  # (parameter, axis, index, copy of the touched slices)
    try:
        count = 0
        for layer, idx in neurons.items():
            if int(layer) not in blocks:
                raise UserError(f"layer {layer} is not a decoder layer of this model (0-{len(blocks) - 1})")
            b = blocks[int(layer)]
            index = torch.unique(torch.as_tensor(np.asarray(idx, dtype=np.int64)))
            if index.numel() == 0:
                continue
            if int(index.min()) < 0 or int(index.max()) >= b.width:
                raise UserError(f"layer {layer} has neurons 0-{b.width - 1}")
            parts = [(b.gate.weight, 0), (b.up.weight, 0), (b.down.weight, 1)]
            parts += [(lin.bias, 0) for lin in (b.gate, b.up) if lin.bias is not None]
            with torch.no_grad():
                for p, axis in parts:
                    i = index.to(p.device)
                    saved.append((p, axis, i, p.index_select(axis, i)))  # index_select copies
                    p.index_fill_(axis, i, 0)
            count += int(index.numel())
        yield count
    finally:
        with torch.no_grad():
            for p, axis, i, copy in reversed(saved):
                p.index_copy_(axis, i, copy)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def ablate(model: nn.Module, tokenizer, req, stats, identity: dict, report=None) -> dict:
    """Every ablation `req` (an AblateRequest) asks for, on `model` (dense, left dense), class membership
    from `stats` (NeuronStats of req's calibration fields) -> the JSON-able result."""
    report = report or (lambda *a, **k: None)
    t_start = time.perf_counter()
    blocks = mlp_blocks(model)
    n_layers, width = len(blocks), blocks[0].width
    req.validate(n_layers, width)
    if (stats.n_layers, stats.width) != (n_layers, width):
        raise UserError(f"the statistics are of {stats.n_layers} layers x {stats.width} neurons, the model has "
                        f"{n_layers} x {width}")
    thresholds = req.thresholds
    masks = ablation.class_masks(stats.to_frame(), req.class_list, **thresholds)
    bands = req.bands(n_layers) or (None,)
    neurons = req.neuron_list(n_layers, width)

    cap = req.eval_window_cap(next(model.parameters()).device.type == "cuda")
    dense, dense_cached = measure_ppl(model, tokenizer, req.eval, req.eval_seqlen, cap, identity,
                                      progress=token_progress(report, "dense perplexity", 0.2, 0.1))
    win, _ = evaluation_set(tokenizer, req.eval, req.eval_seqlen, cap)
    protocol = {"source": req.eval, "seqlen": dense.seqlen, "windows": dense.windows, "tokens": dense.tokens}

    # the plan: (what, the row of the result it fills, its [layers, width] mask)
    plan, classes = [], []
    for cls in req.class_list:
        for band in bands:
            mask = ablation.in_band(masks[cls], band)
            row = {"class": cls, "layers": band.text if band else f"0-{n_layers - 1}", "neurons": int(mask.sum()),
                   "per_layer": mask.sum(axis=1).astype(int).tolist(), "ppl": dense.ppl, "random_ppl": []}
            classes.append(row)
            if not mask.any():
                continue  # nothing zeroed: the dense model, measured already
            plan.append((f"{cls} in layers {row['layers']}", row, "ppl", mask))
            for r in range(int(req.controls)):
                control = ablation.random_like(mask, ablation.control_seed(req.seed, cls, band, r))
                plan.append((f"random control {r + 1} of {cls} in layers {row['layers']}", row, "random_ppl", control))
    single = []
    for layer, neuron in neurons:
        mask = np.zeros((n_layers, width), dtype=bool)
        mask[layer, neuron] = True
        row = {"layer": layer, "neuron": neuron, "ppl": None}
        single.append(row)
        plan.append((f"neuron {neuron} of layer {layer}", row, "ppl", mask))

    each = dense.seconds
    report(0.3, f"ablation plan: {len(plan)} evaluations of {protocol['windows']} windows x {protocol['seqlen']} "
                f"tokens, about {_duration(len(plan) * each)} (one evaluation took {each:.1f} s)", True)
    timings = []
    for i, (label, row, key, mask) in enumerate(plan):
        t0 = time.perf_counter()
        progress = token_progress(report, f"ablation {i + 1}/{len(plan)}, {label}", 0.3 + 0.7 * i / len(plan),
                                  0.7 / len(plan))
        with zeroed(model, ablation.neuron_index(mask)):
            ppl = perplexity(model, win, progress=progress).ppl
        if key == "random_ppl":
            row[key].append(ppl)
        else:
            row[key] = ppl
        timings.append(time.perf_counter() - t0)

    for row in classes:
        mean, std = ablation.spread(row["random_ppl"])
        row.update(delta_ppl=row["ppl"] - dense.ppl, random_mean=mean, random_std=std)
    for row in single:
        row["delta_ppl"] = row["ppl"] - dense.ppl
    return finite({
        "dense_ppl": dense.ppl, "dense_cached": dense_cached, "eval": protocol, "classes": classes,
        "neurons": single,
        "roles": {**thresholds, "dead_below": scoring.DEAD_BELOW, "controls": int(req.controls),
                  "seed": int(req.seed)},
        "evaluations": len(plan),
        "seconds": {"per_evaluation": round(float(np.median(timings)), 3) if timings else None,
                    "total": round(time.perf_counter() - t_start, 3)},
        "shape": [n_layers, width], "model_dtype": models.dtype_name(next(model.parameters()).dtype),
    })
