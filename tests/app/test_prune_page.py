"""The Prune & evaluate page through AppTest: a run started from the page completes with a perplexity,
its result is shown with its protocol, and a sweep fills the landscape."""

import json
import re
import time
from pathlib import Path

import numpy as np

import pytest
from streamlit.testing.v1 import AppTest

from neuronrank.engine.statistics import get_stats
from neuronrank.config.requests import StatsRequest
from neuronrank.runs.store import RunStore

APP = str(Path(__file__).resolve().parents[2] / "app.py")
PAGE = "app_pages/4_prune.py"


@pytest.fixture(scope="module")
def entry(tiny_dir, text_file):
    return get_stats(StatsRequest(model=str(tiny_dir), calib=f"file:{text_file}", nsamples=4, seqlen=16, seed=0,
                                  batch_size=2)).entry


def open_page(entry, text_file):
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["entry_key"] = entry.key
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def fill_form(at, text_file):
    at.text_input[[w.label for w in at.text_input].index("Evaluation text")].set_value(f"file:{text_file}")
    at.number_input[[w.label for w in at.number_input].index("Eval seqlen")].set_value(16)
    at.number_input[[w.label for w in at.number_input].index("Eval windows (0 = all)")].set_value(4)


def wait_done(run_id, timeout=120):
    store, t = RunStore(), time.time()
    while time.time() - t < timeout:
        run = store.get(run_id)
        if run["status"] in ("done", "failed", "cancelled"):
            return run
        time.sleep(0.3)
    raise AssertionError("run did not finish")


def test_start_run_from_page_completes_with_perplexity(entry, text_file):
    at = open_page(entry, text_file)
    fill_form(at, text_file)
    at.selectbox[[w.label for w in at.selectbox].index("Method")].set_value("wanda")
    at.button[[b.label for b in at.button].index("Start prune + evaluate")].click().run()
    assert not at.exception, [e.value for e in at.exception]
    run_id = int(at.query_params["run"][0] if isinstance(at.query_params["run"], list) else at.query_params["run"])
    run = wait_done(run_id)
    assert run["status"] == "done", run["error"]
    # the worker used the loaded entry's calibration and the form's settings
    p = run["params"]
    assert (p["model"], p["nsamples"], p["seqlen"], p["prune_method"]) == (entry.params["model"], 4, 16, "wanda")
    assert run["result"]["protocol"]["windows"] == 4 and run["result"]["pruned_ppl"] > 0
    at.run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Pruned perplexity"] == f"{run['result']['pruned_ppl']:.3f}"
    assert metrics["Dense perplexity"] == f"{run['result']['dense_ppl']:.3f}"
    assert any("seqlen 16, 4 windows" in c.value for c in at.caption)
    # the history table lists it
    history = [d.value for d in at.dataframe if "run" in d.value.columns]
    assert len(history) == 1 and run_id in set(history[0]["run"])
    # the per-module sparsity table of the run: MLP modules of both layers at 50 %
    mods = [d.value for d in at.dataframe if "module" in d.value.columns][0]
    mlp = mods[mods["module"].isin(["gate", "up", "down"])]
    assert (abs(mlp["fraction"] - 0.5) < 1e-9).all() and len(mlp) == 6


def widget(at, kind, label):
    return getattr(at, kind)[[w.label for w in getattr(at, kind)].index(label)]


def test_calibration_group_targets_and_zero_shot_reach_the_run(entry, text_file, local_task, monkeypatch):
    """The Prune page's calibration order, comparison group, pruned linears and zero-shot tasks are the
    run's: a sequential wanda over all linears compared per matrix, with a local lm-eval task, stores
    them, prunes attention too, and shows the task's accuracy; methods that can't use a setting lock it."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    at = open_page(entry, text_file)
    fill_form(at, text_file)
    widget(at, "selectbox", "Method").set_value("neuronrank_old").run()
    assert widget(at, "selectbox", "Pruned linears").disabled  # NeuronRank scores MLP neurons only
    widget(at, "selectbox", "Method").set_value("sparsegpt").run()
    fixed = widget(at, "selectbox", "Calibration order")
    assert fixed.disabled and fixed.value == "sequential"
    widget(at, "selectbox", "Method").set_value("wanda").run()
    widget(at, "selectbox", "Calibration order").set_value("sequential")
    widget(at, "selectbox", "Pruned linears").set_value("all")
    widget(at, "selectbox", "Comparison group").set_value("matrix")
    widget(at, "multiselect", "Zero-shot tasks (lm-eval)").set_value(["nr_tiny_yesno"]).run()
    widget(at, "text_input", "Folder of extra lm-eval task YAMLs").set_value(str(local_task))
    widget(at, "button", "Start prune + evaluate").click().run()
    assert not at.exception, [e.value for e in at.exception]
    run_id = int(at.query_params["run"][0] if isinstance(at.query_params["run"], list) else at.query_params["run"])
    run = wait_done(run_id, timeout=240)
    assert run["status"] == "done", run["error"]
    p = run["params"]
    assert (p["calibration"], p["targets"], p["group"], p["eval_tasks"], p["eval_tasks_path"]) == \
        ("sequential", "all", "matrix", "nr_tiny_yesno", str(local_task))
    assert run["result"]["sparsity"]["attention"] > 0.49  # the attention projections were pruned too
    at.run()
    assert any(f"Run {run_id}: wanda · unstructured · sequential · per matrix · all linears" in h.value
               for h in at.subheader)
    shown = [d.value for d in at.dataframe if "task" in d.value.columns]
    acc = run["result"]["zero_shot"]["nr_tiny_yesno"]["acc"]
    assert shown and shown[0].set_index("task").loc["nr_tiny_yesno", "acc"] == acc


def test_bad_input_is_a_message_not_a_traceback(entry, text_file):
    at = open_page(entry, text_file)
    fill_form(at, text_file)
    # N:M sets the ratio and locks it
    at.selectbox[[w.label for w in at.selectbox].index("Sparsity type")].set_value("2:4").run()
    ratio = at.slider[[w.label for w in at.slider].index("Sparsity ratio")]
    assert ratio.value == 0.5 and ratio.disabled
    # a typo in the evaluation text is caught as it is typed, in the app's words; Start is disabled
    at.text_input[[w.label for w in at.text_input].index("Evaluation text")].set_value("wikki").run()
    assert not at.exception
    assert any("'wikki' is not a text source" in e.value for e in at.error)
    assert at.button[[b.label for b in at.button].index("Start prune + evaluate")].disabled
    at.text_input[[w.label for w in at.text_input].index("Evaluation text")].set_value("file:/no/such.txt").run()
    assert any("does not exist" in e.value and "NEURONRANK_ALLOWED_DIRS" not in e.value for e in at.error)
    # more layers than the model has: said in the widget's words, nothing queued
    at.text_input[[w.label for w in at.text_input].index("Evaluation text")].set_value(f"file:{text_file}").run()
    at.selectbox[[w.label for w in at.selectbox].index("Sparsity type")].set_value("unstructured").run()
    n_before = len(RunStore().list())
    at.number_input[[w.label for w in at.number_input].index("Prune only the last N layers (0 = all)")].set_value(9)
    at.run()  # checked as it is set, before Start
    assert not at.exception
    assert any("'Prune only the last N layers' is 9, but the model has 2 layers" in e.value for e in at.error)
    assert at.button[[b.label for b in at.button].index("Start prune + evaluate")].disabled
    assert len(RunStore().list()) == n_before


def test_sweep_fills_the_landscape(entry, text_file):
    at = open_page(entry, text_file)
    fill_form(at, text_file)
    at.text_input[[w.label for w in at.text_input].index("x values")].set_value("0, 1")
    at.text_input[[w.label for w in at.text_input].index("y values")].set_value("1")
    at.button[[b.label for b in at.button].index("Queue sweep")].click().run()
    assert not at.exception, [e.value for e in at.exception]
    group = at.session_state["url:sweep"]
    runs = RunStore().list(group=group)
    assert len(runs) == 2
    done = [wait_done(r["id"]) for r in runs]
    assert all(r["status"] == "done" for r in done), [r["error"] for r in done]
    at.run()
    spec = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    heat = [s for s in spec if s["data"][0]["type"] == "heatmap"]
    assert heat, "no landscape heatmap"
    z = heat[0]["data"][0]["z"]  # colour on log10(ppl), the values written in the cells
    by_alpha = {r["params"]["alpha"]: r["result"]["pruned_ppl"] for r in done}
    assert z[0] == pytest.approx([np.log10(by_alpha[0.0]), np.log10(by_alpha[1.0])])
    best = min(by_alpha, key=by_alpha.get)
    cells = [f"{by_alpha[a]:.1f}" for a in (0.0, 1.0)]
    cells[[0.0, 1.0].index(best)] = "★ " + cells[[0.0, 1.0].index(best)]  # the best cell is starred
    assert heat[0]["data"][0]["text"][0] == cells
    assert f"best {by_alpha[best]:.2f} at alpha={best:g}" in heat[0]["layout"]["title"]["text"]


def start_from_page(entry, text_file, method):
    at = open_page(entry, text_file)
    fill_form(at, text_file)
    at.selectbox[[w.label for w in at.selectbox].index("Method")].set_value(method)
    at.button[[b.label for b in at.button].index("Start prune + evaluate")].click().run()
    assert not at.exception, [e.value for e in at.exception]
    q = at.query_params["run"]
    return at, int(q[0] if isinstance(q, list) else q)


def test_two_sessions_start_runs_at_once(entry, text_file):
    a, run_a = start_from_page(entry, text_file, "magnitude")
    b, run_b = start_from_page(entry, text_file, "random")
    assert run_a != run_b
    ra, rb = wait_done(run_a), wait_done(run_b)
    assert ra["status"] == rb["status"] == "done"
    assert ra["params"]["prune_method"] == "magnitude" and rb["params"]["prune_method"] == "random"
    assert ra["finished"] <= rb["started"]  # one heavy run at a time, the other queued
    for at, run in ((a, ra), (b, rb)):
        at.run()
        assert {m.label: m.value for m in at.metric}["Pruned perplexity"] == f"{run['result']['pruned_ppl']:.3f}"


def test_run_survives_a_server_restart_and_the_page_reattaches(entry, text_file):
    """A 'server' process queues a run and is killed at once with its whole process group; the
    detached dispatcher and worker finish the run, and a fresh session with ?run= shows it."""
    import os
    import signal
    import subprocess
    import sys

    code = ("import sys, time; from neuronrank.queue import jobs; "
            "print(jobs.submit('prune', dict(model=sys.argv[1], calib=sys.argv[2], eval=sys.argv[2], nsamples=4, "
            "seqlen=16, eval_seqlen=16, eval_windows=4, prune_method='magnitude', sparsity_ratio=0.3)), flush=True); "
            "time.sleep(60)")
    server = subprocess.Popen([sys.executable, "-c", code, entry.params["model"], f"file:{text_file}"],
                              stdout=subprocess.PIPE, text=True, start_new_session=True,
                              cwd=str(Path(__file__).resolve().parents[2]))
    run_id = int(server.stdout.readline())
    os.killpg(server.pid, signal.SIGKILL)
    server.wait(10)
    run = wait_done(run_id)
    assert run["status"] == "done", run["error"]
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["entry_key"] = entry.key
    at.query_params["run"] = str(run_id)
    at.run()
    at.switch_page(PAGE).run()
    assert {m.label: m.value for m in at.metric}["Pruned perplexity"] == f"{run['result']['pruned_ppl']:.3f}"


def test_paths_outside_the_allowed_folders_are_refused(entry, text_file):
    at = open_page(entry, text_file)
    fill_form(at, text_file)
    at.text_input[[w.label for w in at.text_input].index("Evaluation text")].set_value("file:/etc/passwd")
    before = len(RunStore().list())
    at.button[[b.label for b in at.button].index("Start prune + evaluate")].click().run()
    assert not at.exception
    assert any("outside the allowed folders" in e.value for e in at.error)
    assert len(RunStore().list()) == before  # nothing queued


def _widget(elements, label):
    return elements[[w.label for w in elements].index(label)]


def said(at) -> list[str]:
    """The page's error messages as a reader sees them (the markdown escapes removed)."""
    return [re.sub(r"\\(.)", r"\1", e.value) for e in at.error]


def _start(at):
    return _widget(at.button, "Start prune + evaluate")


def test_sparsegpt_structured_is_refused_before_start(entry, text_file):
    at = open_page(entry, text_file)
    fill_form(at, text_file)
    at.run()
    assert not at.error and not _start(at).disabled
    _widget(at.selectbox, "Method").set_value("sparsegpt").run()
    _widget(at.selectbox, "Sparsity type").set_value("structured").run()
    assert not at.exception
    assert any("sparsegpt with sequential calibration prunes unstructured or N:M sparsity only" in m
               for m in said(at)), said(at)
    assert _start(at).disabled
    _widget(at.selectbox, "Method").set_value("neuronrank_old").run()
    _widget(at.selectbox, "Sparsity type").set_value("unstructured").run()
    assert not at.error and not _start(at).disabled


def test_an_exponent_typed_out_of_range_disables_start(entry, text_file):
    """The value reaches Python (no widget bound keeps it out with the old value running) and is refused."""
    at = open_page(entry, text_file)
    fill_form(at, text_file)
    at.run()
    _widget(at.number_input, "α (|W|)").set_value(11.0).run()
    assert not at.exception
    assert any("alpha must be between 0 and 10 (got 11" in m for m in said(at)), said(at)
    assert _start(at).disabled
    _widget(at.number_input, "α (|W|)").set_value(2.0).run()
    assert not at.error and not _start(at).disabled


def test_a_task_folder_outside_the_allowed_folders_is_refused_as_typed(entry, text_file):
    """A folder of task YAMLs is code: outside the allowed folders, or not a folder, it is said at once."""
    at = open_page(entry, text_file)
    fill_form(at, text_file)
    at.run()
    start = lambda: _start(at)  # noqa: E731
    _widget(at.multiselect, "Zero-shot tasks (lm-eval)").set_value(["boolq"]).run()
    _widget(at.text_input, "Folder of extra lm-eval task YAMLs").set_value("/etc").run()
    assert any("/etc is outside the allowed folders" in m for m in said(at)), said(at)
    assert start().disabled
    _widget(at.text_input, "Folder of extra lm-eval task YAMLs").set_value(str(text_file)).run()
    assert any("is a file, not a folder" in m for m in said(at)), said(at)
    assert start().disabled


def test_owl_and_compensation_widgets_reach_the_run(entry, text_file):
    """Layer sparsity and OWL's λ for unstructured runs, bias compensation for structured ones (each locked
    where it does not apply); FLAP is offered from the registry and refused for unstructured sparsity."""
    at = open_page(entry, text_file)
    fill_form(at, text_file)
    _widget(at.selectbox, "Method").set_value("flap").run()
    assert any("flap prunes structured sparsity only" in m for m in said(at)), said(at)
    assert _start(at).disabled
    _widget(at.selectbox, "Sparsity type").set_value("structured").run()
    assert _widget(at.selectbox, "Layer sparsity").disabled and not _widget(at.selectbox, "Bias compensation").disabled
    assert not at.error and not _start(at).disabled
    _start(at).click().run()
    run = wait_done(int(at.query_params["run"][0] if isinstance(at.query_params["run"], list) else at.query_params["run"]))
    assert run["status"] == "done", run["error"]
    assert (run["params"]["compensate"], run["params"]["scope"], run["params"]["layer_sparsity"]) == \
        ("mean", "global", "uniform")
    _widget(at.selectbox, "Method").set_value("wanda").run()
    _widget(at.selectbox, "Sparsity type").set_value("unstructured").run()
    assert _widget(at.selectbox, "Bias compensation").disabled and _widget(at.number_input, "OWL λ").disabled
    _widget(at.selectbox, "Layer sparsity").set_value("owl").run()
    _widget(at.number_input, "OWL λ").set_value(0.1).run()
    assert not at.error and not _start(at).disabled
    _start(at).click().run()
    run = wait_done(int(at.query_params["run"][0] if isinstance(at.query_params["run"], list) else at.query_params["run"]))
    assert run["status"] == "done", run["error"]
    p = run["params"]
    assert (p["layer_sparsity"], p["owl_lambda"], p["owl_threshold"], p["compensate"]) == ("owl", 0.1, 5.0, None)
    sp = run["result"]["owl"]["sparsity"]
    assert max(sp) - min(sp) == pytest.approx(0.2)
