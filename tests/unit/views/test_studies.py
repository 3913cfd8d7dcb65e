"""The Search page's numbers: history points with stopped-early trials, importances' minimum, halving text,
and the time a study takes."""

import pandas as pd
import pytest

from neuronrank.views import studies


def trials():
    return pd.DataFrame([
        {"trial": 0, "state": "complete", "ppl": 80.0, "windows": 16},
        {"trial": 1, "state": "pruned", "ppl": 400.0, "windows": 4},
        {"trial": 2, "state": "complete", "ppl": 50.0, "windows": 16},
        {"trial": 3, "state": "complete", "ppl": 60.0, "windows": 16},
        {"trial": 4, "state": "fail", "ppl": None, "windows": None},
        {"trial": 5, "state": "running", "ppl": None, "windows": None}])


def test_history_points_plot_stopped_trials_and_the_best_so_far():
    pts = studies.history_points(trials())
    assert pts["complete"]["trial"].tolist() == [0, 2, 3]
    assert pts["stopped"][["trial", "ppl", "windows"]].values.tolist() == [[1, 400.0, 4]]
    assert pts["best"]["ppl"].tolist() == [80.0, 50.0, 50.0]
    assert studies.history_points(pd.DataFrame())["complete"].empty


def test_importances_need_enough_trials():
    assert "at least" in studies.importance_note(2)
    assert "rough" in studies.importance_note(studies.IMPORTANCE_MIN)
    assert studies.importance_note(studies.IMPORTANCE_ROUGH) is None


def test_halving_text_never_reads_none():
    assert studies.halving_text([4, 8, 16]) == "halving after 4 and 8 of 16 windows"
    assert studies.halving_text([2, 4, 8, 16]) == "halving after 2, 4 and 8 of 16 windows"
    assert studies.halving_text([16]).startswith("no halving")
    assert "None" not in studies.halving_text(None)


def test_halving_fraction_is_the_expected_share_of_a_full_evaluation():
    # half stop after 4 of 16, a quarter after 8, a quarter run all 16: (2 + 2 + 4) / 16
    assert studies.halving_fraction([4, 8, 16]) == pytest.approx(0.5)
    assert studies.halving_fraction([8, 16]) == pytest.approx(0.75)
    assert studies.halving_fraction([16]) == 1.0


def test_estimate_from_measured_trials():
    # two trials: 16 windows in 8 s, 4 windows in 2 s -> 0.5 s a window; overhead median 1 s
    r = studies.rates([{"eval": 8.0, "windows": 16, "overhead": 1.0}, {"eval": 2.0, "windows": 4, "overhead": 1.0},
                       {"eval": None, "windows": None}], "measured")
    assert r.eval_per_window == pytest.approx(0.5) and r.overhead == 1.0
    e = studies.search_estimate(10, 16, [4, 8, 16], r, baselines_left=4, setup=5.0)
    full = 16 * 0.5
    assert e.high == pytest.approx(5 + 4 * (full + 1) + 10 * (1 + full))
    assert e.low == pytest.approx(5 + 4 * (full + 1) + 10 * (1 + full * 0.5))
    assert studies.search_estimate(10, 16, [16], None) is None
    assert "no estimate yet" in studies.estimate_text(None)
    assert studies.estimate_text(e).startswith("about ") and "measured" in studies.estimate_text(e)
    assert studies.duration_text(30) == "30 s" and studies.duration_text(600) == "10 min"
    assert studies.span_text(78, 130) == "1–2 min" and studies.span_text(25, 45) == "25–45 s"
    assert studies.span_text(600, 600) == "10 min" and studies.span_text(7200, 9000) == "2.0–2.5 h"


def test_prune_runs_as_samples():
    runs = [{"status": "done", "params": {"model": "m"}, "result": {"timings": {"eval": 6.0, "prune": 0.5, "load": 3.0},
                                                                  "protocol": {"seqlen": 512, "windows": 12}}},
            {"status": "done", "params": {"model": "other"}, "result": {"timings": {"eval": 99.0},
                                                                      "protocol": {"seqlen": 512, "windows": 1}}},
            {"status": "failed", "params": {"model": "m"}, "result": None}]
    samples = studies.run_samples(runs, "m", 512)
    assert samples == [{"eval": 6.0, "windows": 12, "overhead": 0.5}]
    assert studies.run_samples(runs, "m", 128) == []
    assert studies.loading_seconds(runs, "m") == 3.0
