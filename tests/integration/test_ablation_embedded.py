"""Role ablation on the embedded SmolLM2-135M (slow: the real model), small sizes: the dead class of a real
entry, zeroed in a fresh copy of the model and evaluated through Hugging Face's own loss on the same
windows, gives the command's number; its random control has the dead class's per-layer counts."""

import json
import math

import numpy as np
import pytest
import torch

from neuronrank.analysis import ablation
from neuronrank.cli import main
from neuronrank.data import stats_cache as store
from neuronrank.engine import models
from neuronrank.engine.windows import evaluation_set


@pytest.mark.slow
def test_dead_class_ablation_matches_hf_loss_in_a_fresh_model(capsys):
    code = main(["ablate", "--nsamples", "4", "--seqlen", "64", "--eval", "wiki", "--eval-seqlen", "128",
                 "--eval-windows", "4", "--classes", "dead", "--controls", "1", "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    res = json.loads(out.strip().splitlines()[-1])
    stats = store.load_stats(store.get_entry(res["stats_key"]))
    dead = stats.n_active < 0.001 * stats.tokens[:, None]  # the Roles page's rule, by hand
    (row,) = res["classes"]
    assert row["class"] == "dead" and row["neurons"] == int(dead.sum()) > 0
    assert row["per_layer"] == dead.sum(axis=1).tolist()

    model, tok = models.load("smollm2-135m", "cpu", "fp32")  # a fresh copy, zeroed by plain indexing
    win, _ = evaluation_set(tok, "wiki", 128, 4)
    with torch.no_grad():
        for layer, cols in enumerate(dead):
            idx = torch.from_numpy(np.flatnonzero(cols))
            mlp = model.model.layers[layer].mlp
            mlp.gate_proj.weight[idx] = 0
            mlp.up_proj.weight[idx] = 0
            mlp.down_proj.weight[:, idx] = 0
        nll = sum(float(model(input_ids=w[None], labels=w[None]).loss.double()) * 127 for w in win)
    assert res["eval"]["tokens"] == 4 * 127
    assert row["ppl"] == pytest.approx(math.exp(nll / (4 * 127)), rel=1e-5)

    control = ablation.random_like(dead, ablation.control_seed(0, "dead", None, 0))
    assert control.sum(axis=1).tolist() == row["per_layer"] and (control & ~dead).any()
    assert len(row["random_ppl"]) == 1 and row["random_ppl"][0] != pytest.approx(row["ppl"], rel=1e-6)
