"""The Search page through AppTest: a study started from the page runs in a worker, its plots fill
(history with the baseline lines, contour, slice, importances), "apply best" sets the Exponents
sliders, and the study is listed among past studies and reopens."""

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from neuronrank.search import study as search
from neuronrank.engine.statistics import get_stats
from neuronrank.config.requests import StatsRequest
from neuronrank.runs.store import RunStore
from neuronrank.views import charts

APP = str(Path(__file__).resolve().parents[2] / "app.py")
PAGE = "app_pages/5_search.py"


@pytest.fixture(scope="module")
def entry(tiny_dir, text_file):
    return get_stats(StatsRequest(model=str(tiny_dir), calib=f"file:{text_file}", nsamples=4, seqlen=16, seed=0,
                                  batch_size=2)).entry


def open_page(entry, text_file=None):
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["entry_key"] = entry.key
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def widget(elements, label):
    return elements[[w.label for w in elements].index(label)]


def titles(at) -> list[str]:
    out = []
    for c in at.get("plotly_chart"):
        t = json.loads(c.proto.spec).get("layout", {}).get("title", "")
        out.append(t.get("text", "") if isinstance(t, dict) else str(t))
    return out


def test_search_from_the_page_fills_the_plots_and_applies_best(entry, text_file):
    at = open_page(entry)
    widget(at.text_input, "Evaluation text").set_value(f"file:{text_file}")
    widget(at.number_input, "Eval seqlen").set_value(16)
    widget(at.number_input, "Eval windows (0 = all)").set_value(8)
    widget(at.number_input, "Trials").set_value(5)
    widget(at.number_input, "Halving rungs").set_value(1)  # every trial completes: contour needs two
    widget(at.text_input, "Study name (empty: derived from the settings)").set_value("page-study")
    at.button[[b.label for b in at.button].index("Start search")].click().run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    run_id = int(at.query_params["search_run"])
    assert at.query_params["study"] == "page-study"
    store, t0 = RunStore(), time.time()
    while (run := store.get(run_id))["status"] in ("queued", "running"):
        assert time.time() - t0 < 240, run["message"]
        time.sleep(0.5)
    assert run["status"] == "done", run["error"]
    assert run["params"]["model"] == entry.params["model"] and run["params"]["trials"] == 5
    at.run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    t = titles(at)
    assert any(x.startswith("Optimization history") for x in t) and "Contour of the pruned perplexity" in t
    assert any(x.startswith("Slice") for x in t) and "Parameter importances (5 complete trials)" in t
    # five complete trials: importances are shown with the caveat that they are rough
    assert any("From 5 complete trials only" in c.value for c in at.caption)
    hist = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                if "Optimization history" in str(json.loads(c.proto.spec)["layout"].get("title")))
    study = search.load_study("page-study")
    # every baseline is a dashed line, unless it is more than two decades above the trials (then listed)
    lines = sorted(s["y0"] for s in hist["layout"]["shapes"])
    base = [b["ppl"] for b in study.user_attrs["baselines"].values()]
    yr = charts.robust_range([*search.trials_frame(study)["ppl"].dropna(), *base])
    drawn = [v for v in base if yr.lo <= v <= yr.hi]
    assert lines == sorted(drawn) and len(drawn) >= 3
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Best NeuronRank-OLD"] == charts.ppl_short(study.best_value)
    assert metrics["wanda baseline"] == charts.ppl_short(study.user_attrs['baselines']['wanda']['ppl'])
    # apply best: the Exponents page's sliders and the shared exponents
    at.button[[b.label for b in at.button].index("Apply best to the Exponents sliders")].click().run()
    best = study.best_params
    for k in ("alpha", "beta", "gamma"):
        want = round(min(best[k], 3.0), 3)
        assert at.session_state[f"_{k}"] == want and at.session_state[k] == want
    assert at.session_state["sparsity"] == 0.5
    at.switch_page("app_pages/2_exponents.py").run()
    assert not at.exception
    explorer = next(c.proto for c in at.get("bidi_component") if c.proto.component_name.endswith("nr_explorer"))
    view = json.loads(explorer.json if explorer.WhichOneof("data") == "json" else explorer.mixed.json)["view"]
    assert view["alpha"] == pytest.approx(round(min(best["alpha"], 3.0), 3))  # the browser's sliders get it
    # past studies: listed; reopening from the table
    at.switch_page(PAGE).run()
    past = next(d.value for d in at.dataframe if "best_ppl" in d.value.columns)
    row = past[past["study"] == "page-study"]
    assert len(row) == 1 and row["trials"].iloc[0] == 5 and row["best_ppl"].iloc[0] == pytest.approx(study.best_value)


def test_the_page_side_of_optuna_imports_no_torch():
    """The app process reads studies and draws Optuna's figures; none of that may pull in torch."""
    import subprocess
    import sys

    code = ("import sys, optuna\n"
            "import neuronrank.search.study, optuna.visualization as ov, optuna.importance\n"
            "s = optuna.create_study()\n"
            "s.optimize(lambda t: t.suggest_float('alpha', 0, 3) + t.suggest_float('beta', 0, 3), n_trials=4)\n"
            "ov.plot_contour(s); ov.plot_slice(s); ov.plot_param_importances(s); ov.plot_optimization_history(s)\n"
            "print(sorted(k for k in sys.modules if k.split('.')[0] == 'torch'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_sparsity_zero_is_refused_at_start(entry, text_file):
    at = open_page(entry, text_file)
    before = len(RunStore().list(kind="search"))
    widget(at.number_input, "Sparsity ratio").set_value(0.0)
    at.button[[b.label for b in at.button].index("Start search")].click().run()
    assert not at.exception
    assert any("sparsity ratio 0 prunes nothing" in e.value for e in at.error), [e.value for e in at.error]
    assert len(RunStore().list(kind="search")) == before and "search_run" not in at.query_params


def test_owl_layer_sparsity_and_its_lambda_range_reach_the_study(entry, text_file):
    from neuronrank.queue import jobs

    at = open_page(entry, text_file)
    widget(at.selectbox, "Layer sparsity").set_value("owl")
    widget(at.selectbox, "Sparsity type").set_value("structured")
    widget(at.slider, "OWL λ range").set_value((0.0, 0.2))
    at.button[[b.label for b in at.button].index("Start search")].click().run()
    assert any("not defined for structured" in e.value for e in at.error), [e.value for e in at.error]
    widget(at.selectbox, "Sparsity type").set_value("unstructured")
    widget(at.text_input, "Study name (empty: derived from the settings)").set_value("page-owl")
    at.button[[b.label for b in at.button].index("Start search")].click().run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    run_id = int(at.query_params["search_run"])
    run = RunStore().get(run_id)
    jobs.cancel(run_id)
    assert (run["params"]["layer_sparsity"], tuple(run["params"]["owl_lambda_range"]), run["params"]["owl_lambda"]) \
        == ("owl", (0.0, 0.2), None)
