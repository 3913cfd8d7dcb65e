"""Run-history tables and the sweep landscape."""

import numpy as np
import pytest

from neuronrank import UserError, history, requests
from neuronrank.requests import PruneRequest


def run(i, status, alpha, gamma, ppl=None, method="neuronrank_old", ratio=0.5, grp="g"):
    return {"id": i, "status": status, "params": {"prune_method": method, "sparsity_type": "unstructured",
                                                 "sparsity_ratio": ratio, "alpha": alpha, "beta": 1.0, "gamma": gamma},
            "result": None if ppl is None else {"dense_ppl": 10.0, "pruned_ppl": ppl, "sparsity": {"mlp": ratio},
                                                "protocol": {"source": "wiki", "seqlen": 512, "windows": 16}},
            "created": 0.0, "started": 1.0, "finished": 3.0 if ppl else None, "grp": grp, "origin": "app",
            "error": None}


def test_landscape_fills_in_as_runs_finish():
    runs = [run(1, "done", 0, 0, 20.0), run(2, "done", 1, 0, 30.0), run(3, "running", 0, 2), run(4, "queued", 1, 2)]
    grid = history.landscape(runs, "alpha", "gamma")
    assert list(grid.columns) == [0, 1] and list(grid.index) == [0, 2]
    assert grid.loc[0, 0] == 20.0 and grid.loc[0, 1] == 30.0
    assert np.isnan(grid.loc[2, 0]) and np.isnan(grid.loc[2, 1])


def test_comparison_averages_finished_runs_only():
    frame = history.runs_frame([run(1, "done", 1, 1, 10.0, "magnitude"), run(2, "done", 1, 1, 14.0, "magnitude"),
                                run(3, "failed", 1, 1, None, "wanda"), run(4, "done", 1, 1, 8.0, "wanda", 0.3)])
    comp = history.comparison(frame)
    assert comp.set_index("method").loc["magnitude", "pruned_ppl"] == 12.0
    assert comp.set_index("method").loc["wanda", "ratio"] == 0.3 and len(comp) == 2
    assert frame.loc[frame["run"] == 1, "seconds"].item() == 2.0


def test_sweep_params_grid():
    base = PruneRequest(beta=1.0, nsamples=5)
    group, grid = requests.new_sweep_group(), requests.sweep_axes(base, "alpha", [0, 1], "gamma", [0, 2, 3]).grid()
    assert group.startswith("sweep-") and len(grid) == 6
    assert {(g.alpha, g.gamma) for g in grid} == {(a, b) for a in (0, 1) for b in (0, 2, 3)}
    assert all(g.beta == 1.0 and g.nsamples == 5 for g in grid)
    with pytest.raises(UserError):
        requests.sweep_axes(base, "alpha", [1], "alpha", [1])
    assert list(requests.parse_floats("2, 0,1,1")) == [0.0, 1.0, 2.0]
    with pytest.raises(UserError):
        requests.parse_floats("a,b")
