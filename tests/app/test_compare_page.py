"""The Compare page through AppTest: two entries of one model drawn with the view's numbers, two entries of
different models refused with one message, entry B restored from (and written to) the URL."""

import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from neuronrank.config.requests import StatsRequest
from neuronrank.data import stats_cache as store
from neuronrank.engine.statistics import get_stats
from neuronrank.views import compare
from tests.app.test_app import LINK, live_links, markdown_bodies, shown_text
from tests.conftest import write_tiny_model_dir

APP = str(Path(__file__).resolve().parents[2] / "app.py")
PAGE = "app_pages/6_compare.py"


def entry(model, text_file, seed):
    return get_stats(StatsRequest(model=str(model), calib=f"file:{text_file}", nsamples=4, seqlen=16, seed=seed,
                                  batch_size=2)).entry.key


@pytest.fixture(scope="module")
def two(tiny_dir, text_file):
    return entry(tiny_dir, text_file, 0), entry(tiny_dir, text_file, 1)


def open_page(a, b=None, url=None):
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["entry_key"] = a
    if b is not None:
        at.session_state["entry2"] = b
    for k, v in (url or {}).items():
        at.query_params[k] = v
    at.run()
    at.switch_page(PAGE)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def charts(at):
    return {s["layout"]["title"]["text"]: s for s in (json.loads(c.proto.spec) for c in at.get("plotly_chart"))}


def test_two_entries_of_one_model(two):
    a, b = two
    at = open_page(a, b)
    assert not at.error, [e.value for e in at.error]
    assert at.selectbox(key="_cmp_a").value == a and at.selectbox(key="_cmp_b").value == b
    specs = charts(at)
    corr = specs["Rank correlation of A and B per layer (Spearman ρ)"]
    fa = store.load_stats(store.get_entry(a)).to_frame()
    fb = store.load_stats(store.get_entry(b)).to_frame()
    want = compare.rank_correlations(fa, fb, 1.0, 1.0, 1.0)
    np.testing.assert_allclose([t["y"] for t in corr["data"]], want[["tf", "idf", "score"]].T.to_numpy())
    roles = next(s for t, s in specs.items() if t.startswith("Role in A (rows)"))
    table, changed = compare.role_transitions(fa, fb, quantile=0.9)
    assert roles["data"][0]["z"] == table.to_numpy().tolist() and f"{changed:,} neurons change" in \
        roles["layout"]["title"]["text"]
    assert "seed: 0 → 1" in " ".join(m.value for m in at.markdown).replace("\\", "")
    assert at.query_params["entry2"] == [b] or at.query_params["entry2"] == b


def test_entries_of_different_models_are_refused(two, tmp_path, text_file, tiny_dir):
    other = entry(write_tiny_model_dir(tmp_path / "other", seed=1), text_file, 0)
    at = open_page(two[0], other)
    assert len(at.error) == 1
    msg = at.error[0].value.replace("\\", "")
    assert msg == (f"These entries are of different models ({tiny_dir} and {tmp_path / 'other'}): a comparison "
                   "needs two statistics entries of the same model.")
    assert not at.get("plotly_chart")


def test_entry2_from_the_url(two):
    a, b = two
    at = open_page(a, url={"entry": a, "entry2": b})
    assert at.selectbox(key="_cmp_b").value == b
    at = open_page(a, url={"entry2": LINK})
    notes = [shown_text(w.value) for w in at.warning]
    assert any(f"entry2={LINK[:40]}" in n and "is not a statistics entry key" in n for n in notes), notes
    assert [b for b in markdown_bodies(at) if live_links(b)] == []
    chosen = at.selectbox(key="_cmp_b").value  # the default: the newest other entry of the same model
    assert chosen != a and store.get_entry(chosen).params["model_identity"] == \
        store.get_entry(a).params["model_identity"]
    assert at.query_params["entry2"] in (chosen, [chosen])  # the bad value replaced by the view's own
