"""The Roles page's ablation panel through AppTest: a class ablation queued from the page uses the page's
thresholds and the Prune page's evaluation settings, runs in a worker, and its chart and table hold the
worker's numbers — which equal an independent recomputation (the class zeroed by hand in a fresh copy of
the model, perplexity from Hugging Face's own loss); one neuron's button gives its Δppl."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from neuronrank.analysis import scoring
from neuronrank.config.requests import StatsRequest
from neuronrank.engine.statistics import get_stats
from neuronrank.engine.windows import evaluation_set
from tests.app.test_prune_page import wait_done

APP = str(Path(__file__).resolve().parents[2] / "app.py")
PAGE = "app_pages/3_roles.py"


@pytest.fixture(scope="module")
def entry(tiny_dir, text_file):
    res = get_stats(StatsRequest(model=str(tiny_dir), calib=f"file:{text_file}", nsamples=4, seqlen=16, seed=0,
                                 batch_size=2))
    return res.entry, res.stats.to_frame()


def open_roles(entry, text_file):
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["entry_key"] = entry.key
    at.run()
    at.switch_page(PAGE).run()
    at.text_input(key="_pr_eval").set_value(f"file:{text_file}")
    at.number_input(key="_pr_eval_seqlen").set_value(16)
    at.number_input(key="_pr_eval_windows").set_value(3).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def run_id_of(at) -> int:
    value = at.query_params["ablate_run"]
    return int(value[0] if isinstance(value, list) else value)


def hf_ppl(tiny_dir, text_file, neurons: np.ndarray) -> float:
    """Perplexity with `neurons` ([layers, width] bool) zeroed by plain indexing in a fresh model, from HF's
    loss over the evaluation windows of the page's settings."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    windows, _ = evaluation_set(tok, f"file:{text_file}", 16, 3)
    with torch.no_grad():
        for layer, cols in enumerate(neurons):
            idx = torch.from_numpy(np.flatnonzero(cols))
            mlp = model.model.layers[layer].mlp
            mlp.gate_proj.weight[idx] = 0
            mlp.up_proj.weight[idx] = 0
            mlp.down_proj.weight[:, idx] = 0
        nll = sum(float(model(input_ids=w[None], labels=w[None]).loss.double()) * (len(w) - 1) for w in windows)
    return math.exp(nll / sum(len(w) - 1 for w in windows))


def test_a_class_ablation_from_the_roles_page_matches_an_independent_recomputation(entry, text_file, tiny_dir):
    entry, frame = entry
    at = open_roles(entry, text_file)
    at.select_slider(key="_role_quantile").set_value(0.5)  # the tiny model's top 10 % hold no critical neuron
    at.multiselect(key="abl_classes").set_value(["critical"])
    at.number_input(key="abl_controls").set_value(1).run()
    # the cost is said before the run: one class, one control -> two evaluations
    assert any(c.value.startswith("Cost: 2 perplexity evaluations") for c in at.caption)
    at.button(key="abl_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    run = wait_done(run_id_of(at))
    assert run["status"] == "done", run["error"]
    p = run["params"]
    # the page's thresholds and the Prune page's evaluation settings
    assert (p["classes"], p["quantile"], p["controls"], p["eval_seqlen"], p["eval_windows"]) == \
        ("critical", 0.5, 1, 16, 3)
    labels, _ = scoring.roles(frame, quantile=0.5, dead_below=scoring.DEAD_BELOW)
    critical = (np.asarray(labels) == "critical").reshape(-1, int(frame["neuron"].max()) + 1)
    (row,) = run["result"]["classes"]
    assert row["neurons"] == int(critical.sum()) > 0
    assert row["ppl"] == pytest.approx(hf_ppl(tiny_dir, text_file, critical), rel=1e-5)

    at.run()  # the page shows the finished run: the chart's bars and the table are the worker's numbers
    assert not at.exception, [e.value for e in at.exception]
    (chart,) = [c for c in at.get("plotly_chart") if "role zeroed" in c.proto.spec]
    import json

    bars = json.loads(chart.proto.spec)["data"]
    assert bars[0]["y"][0] == pytest.approx(row["ppl"]) and bars[1]["y"][0] == pytest.approx(row["random_mean"])
    table = [d.value for d in at.dataframe if "random_mean" in d.value.columns][0]
    assert table["ppl"].iloc[0] == pytest.approx(row["ppl"]) and table["controls"].iloc[0] == 1
    assert any("1 random sets with the same number of neurons in every layer" in c.value for c in at.caption)


def test_global_thresholds_and_one_neuron_go_to_the_run(entry, text_file, tiny_dir):
    entry, frame = entry
    at = open_roles(entry, text_file)
    at.radio(key="_role_mode").set_value("global value").run()
    at.number_input(key=f"_thr_tf_{entry.key}").set_value(0.05)
    at.number_input(key=f"_thr_idf_{entry.key}").set_value(1.5)
    at.multiselect(key="abl_classes").set_value(["prune-first"])
    at.number_input(key="abl_controls").set_value(0).run()
    at.button(key="abl_start").click().run()
    run = wait_done(run_id_of(at))
    assert run["status"] == "done", run["error"]
    assert (run["params"]["tf_threshold"], run["params"]["idf_threshold"], run["params"]["quantile"]) == \
        (0.05, 1.5, None)
    labels, _ = scoring.roles(frame, 0.05, 1.5, dead_below=scoring.DEAD_BELOW)
    assert run["result"]["classes"][0]["neurons"] == int((np.asarray(labels) == "prune-first").sum())

    # one neuron: the button in the neuron panel
    at.number_input(key="_pick_layer").set_value(1)
    at.number_input(key="_pick_neuron").set_value(5).run()
    at.button(key="abl_neuron").click().run()
    assert not at.exception, [e.value for e in at.exception]
    run = wait_done(run_id_of(at))
    assert run["status"] == "done", run["error"]
    (n,) = run["result"]["neurons"]
    assert (n["layer"], n["neuron"]) == (1, 5) and run["result"]["classes"] == []
    one = np.zeros((2, int(frame["neuron"].max()) + 1), dtype=bool)
    one[1, 5] = True
    assert n["ppl"] == pytest.approx(hf_ppl(tiny_dir, text_file, one), rel=1e-5)
    at.run()
    metric = [m for m in at.metric if m.label == "layer 1, neuron 5 zeroed"][0]
    assert metric.value == f"{n['ppl']:.3f}"
