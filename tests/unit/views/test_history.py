"""Run-history tables and the sweep landscape."""

import numpy as np
import pytest

from neuronrank import UserError
from neuronrank.views import history
from neuronrank.config import requests
from neuronrank.config.requests import PruneRequest


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


def test_comparison_never_averages_different_exponents():
    """Two neuronrank_old runs at the same ratio but other exponents are two series (the chart once
    plotted their mean, a value no run produced); a baseline's stored exponents are ignored."""
    frame = history.runs_frame([run(1, "done", 1, 1, 50.0), run(2, "done", 1, 0, 30.0),
                                run(3, "done", 2, 2, 9.0, "wanda"), run(4, "done", 0, 0, 11.0, "wanda")])
    comp = history.comparison(frame).set_index("series")
    assert comp.loc["neuronrank_old · unstructured · α=1 β=1 γ=1", "pruned_ppl"] == 50.0
    assert comp.loc["neuronrank_old · unstructured · α=1 β=1 γ=0", "pruned_ppl"] == 30.0
    assert comp.loc["wanda · unstructured", "pruned_ppl"] == 10.0 and comp.loc["wanda · unstructured", "runs"] == 2


def with_params(r, **params):
    r["params"].update(params)
    return r


def test_comparison_never_averages_calibration_group_or_targets():
    """wanda one-pass vs sequential, per row vs per matrix, MLP vs all linears: six runs at one ratio are
    five series; the method's own group (wanda: row) and calibration (sparsegpt: always sequential) add
    nothing to the name, and a stored run's label (run_label) is the chart's."""
    runs = [with_params(run(1, "done", 1, 1, 30.0, "wanda"), group="row", calibration="one-pass", targets="mlp"),
            with_params(run(2, "done", 1, 1, 34.0, "wanda"), group="row", calibration="one-pass", targets="mlp"),
            with_params(run(3, "done", 1, 1, 28.0, "wanda"), group="row", calibration="sequential", targets="mlp"),
            with_params(run(4, "done", 1, 1, 40.0, "wanda"), group="matrix", calibration="one-pass", targets="mlp"),
            with_params(run(5, "done", 1, 1, 45.0, "wanda"), group="row", calibration="one-pass", targets="all"),
            with_params(run(6, "done", 1, 1, 27.0, "sparsegpt"), group="matrix", calibration="sequential",
                        targets="all")]
    comp = history.comparison(history.runs_frame(runs)).set_index("series")
    assert comp.loc["wanda · unstructured", "pruned_ppl"] == 32.0 and comp.loc["wanda · unstructured", "runs"] == 2
    assert comp.loc["wanda · unstructured · sequential", "pruned_ppl"] == 28.0
    assert comp.loc["wanda · unstructured · per matrix", "pruned_ppl"] == 40.0
    assert comp.loc["wanda · unstructured · all linears", "pruned_ppl"] == 45.0
    assert comp.loc["sparsegpt · unstructured · all linears", "pruned_ppl"] == 27.0
    assert len(comp) == 5
    assert {history.run_label(r["params"]) for r in runs} == set(comp.index)
    # a run stored before these fields existed is labelled as the method's own setup
    assert history.run_label(run(7, "done", 1, 1, 9.0, "wanda")["params"]) == "wanda · unstructured"



def test_comparison_never_averages_owl_compensation_or_another_calibration_order():
    """RIA's own order is sequential (one-pass is the departure), OWL names its λ, compensation names itself
    where it is not the method's own (flap's is)."""
    runs = [with_params(run(1, "done", 1, 1, 20.0, "ria"), calibration="sequential"),
            with_params(run(2, "done", 1, 1, 22.0, "ria"), calibration="one-pass"),
            with_params(run(3, "done", 1, 1, 25.0, "wanda"), layer_sparsity="owl", owl_lambda=0.08),
            with_params(run(4, "done", 1, 1, 26.0, "wanda"), layer_sparsity="uniform"),
            with_params(run(5, "done", 1, 1, 30.0, "flap"), sparsity_type="structured", compensate="mean",
                        calibration="one-pass"),
            with_params(run(6, "done", 1, 1, 40.0, "flap"), sparsity_type="structured", compensate="none"),
            with_params(run(7, "done", 1, 1, 50.0, "magnitude"), sparsity_type="structured", compensate="mean")]
    comp = history.comparison(history.runs_frame(runs)).set_index("series")
    assert comp.loc["ria · unstructured", "pruned_ppl"] == 20.0
    assert comp.loc["ria · unstructured · one-pass", "pruned_ppl"] == 22.0
    assert comp.loc["wanda · unstructured · OWL λ=0.08", "pruned_ppl"] == 25.0
    assert comp.loc["wanda · unstructured", "pruned_ppl"] == 26.0
    assert comp.loc["flap · structured", "pruned_ppl"] == 30.0
    assert comp.loc["flap · structured · uncompensated", "pruned_ppl"] == 40.0
    assert comp.loc["magnitude · structured · mean-compensated", "pruned_ppl"] == 50.0
    assert {history.run_label(r["params"]) for r in runs} == set(comp.index)

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


def test_sweep_groups_references_and_best_cell():
    runs = [run(1, "done", 0, 0, 20.0, grp="sweep-a"), run(2, "done", 1, 0, 15.0, grp="sweep-a"),
            run(3, "done", 0, 2, 30.0, grp="sweep-a"), run(4, "queued", 1, 2, grp="sweep-a"),
            run(5, "done", 1, 1, 12.0, "wanda", grp=None), run(6, "done", 1, 1, 14.0, "wanda", grp=None),
            run(7, "done", 1, 1, 40.0, "magnitude", 0.3, grp=None)]
    groups = history.sweep_groups(runs)
    assert groups.to_dict("records")[0] | {"created": 0} == {"group": "sweep-a", "runs": 4, "done": 3, "created": 0,
                                                             "x": "alpha", "y": "gamma", "cells": None,
                                                             "reused": 0}  # an older sweep: axes inferred
    frame = history.runs_frame(runs)
    ref = history.reference_ppl(frame, "unstructured", 0.5, "wiki", 512, 16)
    assert ref == {"wanda": 13.0, "dense": 10.0}  # magnitude ran at 0.3 only
    # wanda in another setup (sequential, all linears) is not the one-pass reference; sequential is its own
    other = runs + [with_params(run(8, "done", 1, 1, 11.0, "wanda", grp=None), calibration="sequential"),
                    with_params(run(9, "done", 1, 1, 99.0, "wanda", grp=None), targets="all")]
    assert history.reference_ppl(history.runs_frame(other), "unstructured", 0.5, "wiki", 512, 16)["wanda"] == 13.0
    assert history.reference_ppl(history.runs_frame(other), "unstructured", 0.5, "wiki", 512, 16,
                                 calibration="sequential")["wanda"] == 11.0
    grid = history.landscape([r for r in runs if r["grp"] == "sweep-a"], "alpha", "gamma")
    assert history.best_cell(grid) == (0, 1, 15.0)
