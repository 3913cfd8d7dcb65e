"""neuronrank.views.entries: the Statistics page's cache table, entry matching and per-layer summary."""

import time
from pathlib import Path

import numpy as np
import pytest

from neuronrank.data import stats_cache as store
from neuronrank.views import entries as views


def test_layer_quantiles(frame):
    q = views.layer_quantiles(frame["tf"].to_numpy(), frame["layer"].to_numpy())
    for layer in range(3):
        v = frame["tf"].to_numpy()[frame["layer"] == layer]
        row = q.iloc[layer]
        np.testing.assert_allclose(row[["q1", "median", "q3"]].to_numpy(float), np.quantile(v, [0.25, 0.5, 0.75]))
        iqr = row["q3"] - row["q1"]
        inside = v[(v >= row["q1"] - 1.5 * iqr) & (v <= row["q3"] + 1.5 * iqr)]
        assert row["lowerfence"] == inside.min() and row["upperfence"] == inside.max()
        assert np.all(np.diff(row[["min", "lowerfence", "q1", "median", "q3", "upperfence", "max"]].to_numpy(float))
                      >= 0)


def test_layer_summary(frame):
    s = views.layer_summary(frame)
    assert list(s["dead"]) == [2, 2, 2] and list(s["tokens"]) == [64] * 3 and list(s["neurons"]) == [40] * 3
    assert list(s["never_active"]) == [2, 2, 2]
    # dead = scoring.dead_mask (active on < 0.1 % of the tokens), not only never active
    rare = frame.assign(tokens=100_000)  # now 1..63 active tokens of 100,000 is < 0.1 %
    assert list(views.layer_summary(rare)["dead"]) == [40] * 3 and list(views.layer_summary(rare)["never_active"]) == [2] * 3


def test_grid_refuses_unequal_layers():
    with pytest.raises(ValueError):
        views.layer_quantiles(np.arange(5.0), np.array([0, 0, 1, 1, 1]))


def fake_entry(key, created, **params):
    base = dict(model="m", calib="news", nsamples=4, seqlen=16, seed=0, site="gate", dtype="float32", topk=16)
    manifest = {"params": {**base, **params}, "created": created, "shape": [2, 8],
                "files": {"a": {"size": 1500}, "b": {"size": 548}}}
    return store.Entry(key, Path("/nowhere") / key, manifest)


def test_entries_table_and_labels():
    now = time.time()
    entries = [fake_entry("k1", now - 90), fake_entry("k2", now - 7200, calib="wiki")]
    t = views.entries_table(entries, now=now)
    assert list(t["key"]) == ["k1", "k2"] and list(t["size_bytes"]) == [2048, 2048]
    assert list(t["size"]) == ["2.0 KB", "2.0 KB"] and list(t["age"]) == ["2 min", "2 h"]
    assert views.entry_label(entries[0]) == "m · news · 4×16 · gate · k1"
    assert views.entries_table([]).empty


def test_matching_entries():
    entries = [fake_entry("new", 2.0), fake_entry("other", 1.5, seed=1), fake_entry("old", 1.0)]
    params = dict(model="m", calib="news", nsamples=4, seqlen=16, seed=0, site="gate")
    assert views.matching_entries(entries, params) == ["new", "old"]
    assert views.matching_entries(entries, {**params, "site": "product"}) == []


def test_human_units():
    assert views.human_bytes(512) == "512 B" and views.human_bytes(5 * 1024**3) == "5.0 GB"
    assert views.human_age(5) == "5 s" and views.human_age(3 * 86400) == "3 d"
