"""The outcome map's view: which measurements it gathers (entry, sparsity, type, protocol, the method's own
setup, damaged records), the baselines beside them, and the Gaussian-process estimate (minimum points, its numbers
against an independent evaluation of the same posterior)."""

import math

import numpy as np
import pytest

from neuronrank.views import outcomes as oc

CALIB = {"model": "smollm2-135m", "calib": "news", "nsamples": 16, "seqlen": 64, "seed": 0, "site": "gate",
         "skip_first": 0}
KEY = "entrykey0001"
PROTO = oc.Protocol("wiki", 128, 4)


def run(i, method="neuronrank_old", a=1.0, b=1.0, g=1.0, ppl=50.0, ratio=0.5, stype="unstructured", proto=PROTO,
        status="done", key=KEY, grp=None, meta=None, **params):
    p = {**CALIB, "prune_method": method, "sparsity_ratio": ratio, "sparsity_type": stype, "alpha": a, "beta": b,
         "gamma": g, "pruning_last": None, "calibration": None, "group": None, "targets": "mlp",
         "layer_sparsity": "uniform", "owl_lambda": None, "compensate": None, **params}
    res = {"pruned_ppl": ppl, "dense_ppl": 12.9, "stats_key": key,
           "protocol": {"source": proto.source, "seqlen": proto.seqlen, "windows": proto.windows, "tokens": 500}}
    return {"id": i, "kind": "prune", "params": p, "status": status, "result": res if status == "done" else None,
            "grp": grp, "meta": meta}


def study(trials, ratio=0.5, stype="unstructured", proto=PROTO, **over):
    return {"study": "s1", "protocol": {**CALIB, "prune_method": "neuronrank_old", "sparsity_ratio": ratio,
                                        "sparsity_type": stype, "calibration": "one-pass", "group": None,
                                        "targets": "mlp", **over},
            "evaluation": {"source": proto.source, "seqlen": proto.seqlen, "windows": proto.windows},
            "baselines": {"dense": {"ppl": 12.9}, "wanda": {"ppl": 30.0}, "random": {"ppl": 1e6}},
            "trials": [{"number": i, "alpha": a, "beta": b, "gamma": g, "ppl": p} for i, (a, b, g, p) in enumerate(trials)]}


def gather(runs, studies=(), sparsity=0.5, stype="unstructured", proto=PROTO):
    return oc.gather(list(runs), list(studies), KEY, CALIB, sparsity, stype, proto)


def test_points_are_filtered_by_entry_sparsity_type_protocol_and_setup():
    runs = [run(1, a=0.5, ppl=40), run(2, a=1.5, ppl=60, grp="sweep-abc"),
            run(3, ratio=0.6), run(4, stype="2:4"), run(5, proto=oc.Protocol("wiki", 128, 16)),
            run(6, proto=oc.Protocol("news", 128, 4)), run(7, key="otherentry"),
            run(8, pruning_last=3), run(9, calibration="sequential"), run(10, layer_sparsity="owl"),
            run(11, group="row"), run(12, status="failed"), run(13, ppl=float("inf")),
            run(14, targets="all")]
    out = gather(runs)
    assert out.points["run"].tolist() == [1, 2]
    assert out.points["source"].tolist() == ["run", "sweep"]
    assert out.points["alpha"].tolist() == [0.5, 1.5] and out.points["ppl"].tolist() == [40, 60]
    assert out.diverged == 1 and out.skipped == 0
    assert out.dense == 12.9


def test_an_older_record_without_a_stats_key_matches_by_its_calibration():
    a, b = run(1), run(2, seed=7)
    for r in (a, b):
        r["result"].pop("stats_key")
    assert gather([a, b]).points["run"].tolist() == [1]


def test_damaged_records_are_skipped_and_counted():
    bad1 = run(1)
    bad1["result"]["protocol"] = "garbage"
    bad2 = run(2)
    bad2["params"]["sparsity_ratio"] = "half"
    bad3 = run(3)
    bad3["result"] = None
    bad4 = {"id": 4, "kind": "prune", "params": None, "status": "done", "result": None}
    out = gather([bad1, bad2, bad3, bad4, run(5)])
    assert out.points["run"].tolist() == [5]
    assert out.skipped == 4


def test_baselines_at_the_same_sparsity_type_and_protocol_averaged():
    runs = [run(1, "wanda", ppl=28.0), run(2, "wanda", ppl=30.0), run(3, "magnitude", ppl=181.0),
            run(4, "magnitude", ppl=5.0, ratio=0.6), run(5, "magnitude", ppl=7.0, proto=oc.Protocol("wiki", 128, 16)),
            run(6, "sparsegpt", ppl=27.2), run(7, "random", ppl=6e6), run(8, "wanda", ppl=1.0, group="matrix"),
            run(9, "flap", ppl=3.0, stype="structured"), run(10, "ria", ppl=29.1, calibration="one-pass")]
    out = gather(runs)
    assert out.baselines == {"magnitude": {"ppl": 181.0, "runs": 1}, "random": {"ppl": 6e6, "runs": 1},
                             "sparsegpt": {"ppl": 27.2, "runs": 1}, "wanda": {"ppl": 29.0, "runs": 2}}
    assert out.points.empty
    # magnitude needs no calibration: any run on the model counts; wanda's must be on this entry's statistics
    other = [run(11, "magnitude", ppl=100.0, key=None, nsamples=999), run(12, "wanda", ppl=1.0, key="otherentry")]
    assert gather(other).baselines == {"magnitude": {"ppl": 100.0, "runs": 1}}


def test_search_trials_and_their_baselines_join_the_points():
    s = study([(0.2, 1.0, 0.0, 45.0), (2.0, 2.0, 2.0, 90.0), (1.0, 1.0, None, 50.0), (1, 1, 1, float("nan"))])
    out = gather([run(1, ppl=70.0)], [s])
    assert out.points["source"].tolist() == ["run", "trial", "trial"]
    assert out.points["ppl"].tolist() == [70.0, 45.0, 90.0]
    assert out.skipped == 1 and out.diverged == 1
    assert out.baselines["wanda"] == {"ppl": 30.0, "runs": 1} and out.baselines["random"]["ppl"] == 1e6
    for s2 in (study([(1, 1, 1, 40)], ratio=0.6), study([(1, 1, 1, 40)], stype="structured"),
               study([(1, 1, 1, 40)], proto=oc.Protocol("wiki", 128, 8)), study([(1, 1, 1, 40)], seed=3),
               study([(1, 1, 1, 40)], calibration="sequential"), study([(1, 1, 1, 40)], layer_sparsity="owl")):
        assert gather([], [s2]).points.empty


def test_protocols_lists_what_the_entry_was_measured_with():
    runs = [run(1), run(2), run(3, proto=oc.Protocol("news", 64, 2)), run(4, model="other")]
    got = oc.protocols(runs, [study([(1, 1, 1, 40), (2, 1, 1, 50)])], KEY, CALIB)
    assert got == {PROTO: 4, oc.Protocol("news", 64, 2): 1}


def test_pending_measure_runs_carry_their_estimate():
    est = {"ppl": 40.0, "low": 35.0, "high": 46.0, "log_mean": math.log(40), "log_std": 0.1, "points": 6}
    out = gather([run(1, status="running", meta={"estimate": est}), run(2, status="queued")])
    assert out.pending == [{"run": 1, "status": "running", "alpha": 1.0, "beta": 1.0, "gamma": 1.0, "estimate": est}]


def _surface(a, b, g):
    return np.exp(3.0 + 0.4 * (a - 1.2) ** 2 + 0.2 * (b - 2) ** 2 + 0.3 * g)


def _points(n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 3, (n, 3))
    return [run(i + 1, a=x[0], b=x[1], g=x[2], ppl=float(_surface(*x))) for i, x in enumerate(X)]


def test_no_estimate_below_the_minimum_points():
    assert oc.fit(gather(_points(oc.MIN_POINTS - 1)).points) is None
    assert oc.fit(gather(_points(oc.MIN_POINTS)).points) is not None


def test_the_gp_estimates_a_smooth_surface_and_knows_its_uncertainty():
    post = oc.fit(gather(_points(40)).points)
    assert post.n == 40
    rng = np.random.default_rng(5)
    X = rng.uniform(0.3, 2.7, (30, 3))
    mean, std = post.predict(X[:, 0], X[:, 1], X[:, 2])
    truth = np.log(_surface(X[:, 0], X[:, 1], X[:, 2]))
    assert np.max(np.abs(mean - truth)) < 0.15  # log ppl: within ~16 % of the surface inside the box
    assert np.all(std > 0)
    # far from every point the GP says it knows less than beside one
    near = post.predict(*gather(_points(40)).points[["alpha", "beta", "gamma"]].to_numpy().T[:, :1])[1][0]
    one = oc.fit(gather(_points(6)).points)
    assert one.predict(3.0, 0.0, 3.0)[1][0] > near
    est = post.estimate(1.0, 2.0, 0.5)
    assert est["low"] < est["ppl"] < est["high"] and est["points"] == 40
    assert est["ppl"] == pytest.approx(math.exp(est["log_mean"]))
    assert "68 %" in oc.estimate_text(est) and "40 measured points" in oc.estimate_text(est)


def _matern52(d):
    k = d * math.sqrt(5)
    return (1 + k + k * k / 3) * math.exp(-k)


def test_the_browser_posterior_reproduces_predict():
    """An independent evaluation of the exported numbers (plain Python loops, as the browser does) equals
    sklearn's predict(return_std=True)."""
    post = oc.fit(gather(_points(25, seed=3)).points)
    b = post.browser()
    n = b["n"]
    X = np.array(b["X"]).reshape(n, 3)
    L = np.array(b["L"]).reshape(n, n)
    assert b["nu"] == 2.5 and len(b["ls"]) == 3
    for a, be, g in [(0.0, 0.0, 0.0), (1.0, 2.0, 0.5), (2.9, 0.1, 1.7), (3.0, 3.0, 3.0)]:
        x = np.array([a, be, g]) / b["scale"]
        k = np.array([b["c"] * _matern52(math.sqrt(sum(((x[j] - X[i, j]) / b["ls"][j]) ** 2 for j in range(3))))
                      for i in range(n)])
        mean = b["y_std"] * float(k @ np.array(b["alpha"])) + b["y_mean"]
        v = np.zeros(n)
        for i in range(n):  # forward substitution: L v = k
            v[i] = (k[i] - L[i, :i] @ v[:i]) / L[i, i]
        var = max(b["c"] + b["noise"] - float(v @ v), 0.0) * b["y_std"] ** 2
        m2, s2 = post.predict(a, be, g)
        assert mean == pytest.approx(m2[0], rel=1e-9)
        assert math.sqrt(var) == pytest.approx(s2[0], rel=1e-7)


def test_browser_points_carry_measured_estimates():
    est = {"ppl": 40.0, "low": 35.0, "high": 46.0, "log_mean": math.log(40), "log_std": 0.1, "points": 6}
    out = gather([run(1, ppl=42.0, meta={"estimate": est}), run(2), run(3, "wanda", ppl=28.0)])
    bp = oc.browser_points(out)
    assert bp["measured"] == [{"run": 1, "alpha": 1.0, "beta": 1.0, "gamma": 1.0, "ppl": 42.0, "estimate": est}]
    assert bp["baselines"] == {"wanda": 28.0}
    assert oc.measured_text(est, 42.0) == "estimated 40 ± 6, measured 42"
