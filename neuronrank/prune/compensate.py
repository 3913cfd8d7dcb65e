"""Mean compensation of structured pruning (FLAP's bias trick, offered for every structured method): a
removed neuron j no longer adds W_down[:, j] · x_j to the layer's output; adding its mean contribution back,

    bias += W_down[:, pruned] · mean(x_pruned)        x = act_fn(gate_proj(h)) * up_proj(h), the down_proj input

keeps the output's mean over the calibration tokens where it was (no retraining). The mean is the
statistics pass's (Σx over the calibration tokens of the dense model, whatever the activation site), rounded
to float16 as FLAP does (it ran float16 models; the float32 mean moves the bias by ~1e-4 here). The bias lives
on down_proj (created, zero, where the model has none); a saved model carries it (prune/export.py: Llama's
`mlp_bias`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from neuronrank.errors import UserError


@torch.no_grad()
def add_mean_bias(blocks: list, drop: np.ndarray, stats) -> None:
    """blocks[r]'s down_proj bias += W_down @ (mean ⊙ drop[r]) for each pruned layer (row r of `drop`)."""
    if stats is None or not stats.has_down_moments:
        raise UserError("mean compensation needs the down_proj input means of the calibration statistics")
    means = stats.down_input_mean().astype(np.float32)  # FLAP's float32 running mean ...
    for row, b in enumerate(blocks):
        down = b.down
        w = down.weight
        mu = torch.from_numpy(means[b.layer]).to(w.device).half().float()  # ... rounded to float16
        gone = torch.from_numpy(drop[row]).to(w.device)
        bias = (mu * gone) @ w.float().t()
        if down.bias is None:
            down.bias = nn.Parameter(torch.zeros(down.out_features, dtype=w.dtype, device=w.device),
                                     requires_grad=False)
        down.bias.add_(bias.to(down.bias.dtype))
