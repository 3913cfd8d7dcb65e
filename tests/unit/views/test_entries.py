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


def test_entry_labels_say_what_tells_the_entries_apart_within_a_narrow_picker():
    e = [fake_entry("9c5686a02fb75a44", 3.0, model="smollm2-135m"),
         fake_entry("35fe9fe79e462fee", 2.0, model="smollm2-135m", calib="wiki", site="product"),
         fake_entry("f9319df92945d45a", 1.0, model="smollm2-135m", nsamples=64, seqlen=256)]
    # the parts that differ (text, windows, site), the common model left out: it made them too long to read
    assert views.entry_labels(e) == {"9c5686a02fb75a44": "news · 4×16 · gate", "35fe9fe79e462fee": "wiki · 4×16 · product",
                                     "f9319df92945d45a": "news · 64×256 · gate"}
    # only the windows differ: the model and text too, while every label stays short
    assert views.entry_labels([e[0], e[2]]) == {"9c5686a02fb75a44": "smollm2-135m · news · 4×16",
                                                "f9319df92945d45a": "smollm2-135m · news · 64×256"}
    assert all(len(v) <= views.LABEL_CHARS for v in views.entry_labels([e[0], e[2]]).values())
    # a lone entry: model, text, windows as far as they fit; paths by their last part, a hub id without its
    # organisation
    (lone,) = views.entry_labels([fake_entry("k", 1.0, model="/data/models/tiny-llama/", calib="file:/x/calib.txt")]).values()
    assert lone == "tiny-llama · file:calib.txt"
    assert list(views.entry_labels([fake_entry("k", 1.0, model="meta-llama/Llama-2-7b-hf")]).values()) == \
        ["Llama-2-7b-hf · news · 4×16"]
    # a seed or skipped positions that differ are named; entries alike in every shown part end with their key
    seeds = views.entry_labels([fake_entry("a1", 1.0), fake_entry("b2", 1.0, seed=3, skip_first=4)])
    assert seeds == {"a1": "m · news · seed 0 · skip 0", "b2": "m · news · seed 3 · skip 4"}
    twins = views.entry_labels([fake_entry("aaaaaaaaaa", 1.0), fake_entry("bbbbbbbbbb", 1.0)])
    assert twins == {"aaaaaaaaaa": "m · news · 4×16 · aaaaaaaa", "bbbbbbbbbb": "m · news · 4×16 · bbbbbbbb"}
    assert views.entry_labels([]) == {}
    assert views.entry_description(e[1]) == ("smollm2-135m · wiki · 4×16 tokens · site product · seed 0 · float32 · "
                                             "key 35fe9fe79e462fee")


def test_matching_entries():
    entries = [fake_entry("new", 2.0), fake_entry("other", 1.5, seed=1), fake_entry("old", 1.0)]
    params = dict(model="m", calib="news", nsamples=4, seqlen=16, seed=0, site="gate")
    assert views.matching_entries(entries, params) == ["new", "old"]
    assert views.matching_entries(entries, {**params, "site": "product"}) == []


def test_human_units():
    assert views.human_bytes(512) == "512 B" and views.human_bytes(5 * 1024**3) == "5.0 GB"
    assert views.human_age(5) == "5 s" and views.human_age(3 * 86400) == "3 d"
