"""The Exponents page's outcome map through AppTest: what the explorer component is sent — the entry's measured
points at the slider's sparsity and the chosen protocol, the baselines there, and the GP posterior (the library's
own fit of those points) once there are enough of them; a damaged run record is skipped and said."""

import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from neuronrank.config.requests import PruneRequest, StatsRequest
from neuronrank.engine.statistics import get_stats
from neuronrank.runs.store import RunStore
from neuronrank.views import outcomes as views
from neuronrank.views.entries import stats_params_of

APP = str(Path(__file__).resolve().parents[2] / "app.py")
PROTO = {"source": "wiki", "seqlen": 64, "windows": 2, "tokens": 126}


@pytest.fixture(scope="module")
def entry(tiny_dir, text_file, tmp_path_factory, isolated_cache):
    """An entry in a cache of this module's own: the run records written here (a damaged one among them) stay
    out of the other app tests' run store."""
    root = tmp_path_factory.mktemp("outcome_cache")
    (root / "models").symlink_to(isolated_cache / "models", target_is_directory=True)
    old = os.environ["NEURONRANK_CACHE"]
    os.environ["NEURONRANK_CACHE"] = str(root)
    try:
        res = get_stats(StatsRequest(model=str(tiny_dir), calib=f"file:{text_file}", nsamples=4, seqlen=16, seed=5,
                                     batch_size=2))
        yield res.entry
    finally:
        os.environ["NEURONRANK_CACHE"] = old


def add_run(entry, store, method="neuronrank_old", a=1.0, b=1.0, g=1.0, ppl=50.0, ratio=0.5, proto=PROTO):
    calib = stats_params_of(entry.params)
    req = PruneRequest(**calib, prune_method=method, sparsity_ratio=ratio, alpha=a, beta=b, gamma=g,
                       eval="wiki", eval_seqlen=proto["seqlen"], eval_windows=proto["windows"]).normalized()
    rid = store.create("prune", asdict(req), status="running")
    store.finish(rid, "done", {"pruned_ppl": ppl, "dense_ppl": 12.5, "protocol": proto, "stats_key": entry.key})
    return rid


def sent(at) -> dict:
    proto = next(c.proto for c in at.get("bidi_component") if c.proto.component_name.endswith("nr_explorer"))
    return json.loads(proto.json if proto.WhichOneof("data") == "json" else proto.mixed.json)["outcomes"]


def open_page(entry):
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["entry_key"] = entry.key
    at.run()
    at.switch_page("app_pages/2_exponents.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_the_map_gets_the_points_baselines_and_posterior(entry):
    store = RunStore()
    rng = np.random.default_rng(0)
    pts = [(float(x), float(y), float(z), float(np.exp(3 + 0.3 * x + 0.2 * (y - 1) ** 2 + 0.1 * z)))
           for x, y, z in rng.uniform(0, 3, (4, 3)).round(2)]
    for p in pts:
        add_run(entry, store, a=p[0], b=p[1], g=p[2], ppl=p[3])
    add_run(entry, store, ratio=0.6, ppl=99.0)  # another sparsity: not on this map
    add_run(entry, store, "wanda", ppl=28.0)
    add_run(entry, store, "magnitude", ppl=181.0)
    bad = add_run(entry, store, ppl=10.0)
    with store._connect() as db:  # a damaged record: its result is not what a prune run writes
        db.execute("UPDATE runs SET result=? WHERE id=?", (json.dumps({"pruned_ppl": "x", "protocol": PROTO}), bad))

    at = open_page(entry)
    out = sent(at)
    assert out["sparsity"] == 0.5 and out["type"] == "unstructured"
    assert out["protocol"] == "wiki, seqlen 64, 2 windows"
    assert out["posterior"] is None and out["min_points"] == views.MIN_POINTS == 5  # 4 points: no estimate
    assert sorted(zip(out["points"]["alpha"], out["points"]["ppl"])) == sorted((p[0], p[3]) for p in pts)
    assert out["points"]["baselines"] == {"magnitude": 181.0, "wanda": 28.0}
    assert out["points"]["dense"] == 12.5 and out["points"]["skipped"] == 1

    more = [(0.5, 2.5, 1.0, 70.0), (2.5, 0.5, 2.0, 40.0)]
    for p in more:
        add_run(entry, store, a=p[0], b=p[1], g=p[2], ppl=p[3])
    at.run()
    out = sent(at)
    post = out["posterior"]
    assert post is not None and post["n"] == 6
    # the library's own fit of the same points, number for number
    calib = stats_params_of(entry.params)
    o = views.gather(RunStore().list(kind="prune"), [], entry.key, calib, 0.5, "unstructured",
                     views.Protocol("wiki", 64, 2))
    want = views.fit(o.points).browser()
    for k in ("X", "alpha", "L", "ls", "c", "noise", "y_mean", "y_std"):
        np.testing.assert_allclose(post[k], want[k], rtol=1e-12)
    assert out["posterior_sig"] == post["sig"] == want["sig"]
    # once per change: the next run names the posterior the tab holds, without sending it again
    at.run()
    again = sent(at)
    assert again["posterior"] is None and again["posterior_sig"] == post["sig"]
    # the sparsity slider's value decides the map: at 60 % only that run, no estimate
    at.session_state["_sparsity"] = 0.6
    at.run()
    out = sent(at)
    assert out["sparsity"] == 0.6 and out["points"]["ppl"] == [99.0] and out["posterior"] is None


def test_a_measure_request_from_the_browser_is_checked():
    from components.outcome_map import checked_request

    ok = {"entry": "k", "alpha": 1.2345, "beta": 0, "gamma": 3, "sparsity": 0.5}
    assert checked_request(ok, "k") == {"alpha": 1.234, "beta": 0.0, "gamma": 3.0, "sparsity": 0.5}
    for bad in ({**ok, "entry": "other"}, {**ok, "alpha": "nan"}, {**ok, "gamma": 3.5}, {**ok, "sparsity": 0.99},
                {**ok, "beta": None}, {"entry": "k"}, None, "x"):
        assert checked_request(bad, "k") is None


def test_the_map_s_type_and_protocol_live_in_the_url(entry):
    store = RunStore()
    other = {"source": "wiki", "seqlen": 32, "windows": 3, "tokens": 93}
    for proto in (PROTO, PROTO, other):  # PROTO has more measurements: the default
        add_run(entry, store, a=0.3, proto=proto)
    at = open_page(entry)
    assert at.query_params["map_eval"] == "wiki@64x2" and at.query_params["map_type"] == "unstructured"
    # a shared link restores the other protocol and the type in a fresh session
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["entry_key"] = entry.key
    at.run()
    at.query_params.update(map_eval="wiki@32x3", map_type="structured")
    at.switch_page("app_pages/2_exponents.py").run()
    assert not at.exception
    out = sent(at)
    assert out["protocol"] == "wiki, seqlen 32, 3 windows" and out["type"] == "structured"
    # a protocol the entry was never measured with, and junk: a notice, as text; the page goes on
    for bad, words in (("news@999x1", "has no measurements on this entry"), ("<b>x</b>", "is not an evaluation protocol")):
        at = AppTest.from_file(APP, default_timeout=60)
        at.session_state["entry_key"] = entry.key
        at.run()
        at.query_params.update(map_eval=bad)
        at.switch_page("app_pages/2_exponents.py").run()
        assert not at.exception
        assert any(words in w.value for w in at.warning), [w.value for w in at.warning]
        assert sent(at)["protocol"] == "wiki, seqlen 64, 2 windows"


def test_search_trials_of_the_entry_join_the_map(entry):
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import create_trial

    from neuronrank.search.study import default_storage, open_storage

    calib = stats_params_of(entry.params)
    storage = open_storage(default_storage(), heartbeat=False)
    s = optuna.create_study(study_name="outcome-map-test", storage=storage)
    s.set_user_attr("protocol", {**calib, "prune_method": "neuronrank_old", "sparsity_ratio": 0.5,
                                 "sparsity_type": "unstructured", "calibration": "one-pass", "targets": "mlp",
                                 "group": None, "eval": "wiki", "eval_seqlen": 64, "eval_windows": 2})
    s.set_user_attr("evaluation", {**PROTO, "chunks": [2]})
    s.set_user_attr("baselines", {"dense": {"ppl": 12.5}, "random": {"ppl": 5000.0}})
    d = {k: FloatDistribution(0, 3) for k in ("alpha", "beta", "gamma")}
    for a, ppl in ((0.11, 31.0), (0.22, 32.0)):
        s.add_trial(create_trial(params={"alpha": a, "beta": 1.0, "gamma": 1.0}, distributions=d, value=ppl))
    at = open_page(entry)
    pts = sent(at)["points"]
    got = {(a, p) for a, p, src in zip(pts["alpha"], pts["ppl"], pts["source"]) if src == "trial"}
    assert got == {(0.11, 31.0), (0.22, 32.0)}
    assert pts["baselines"]["random"] == 5000.0
