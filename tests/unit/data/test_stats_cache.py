"""The statistics cache: hit, miss on any key change, corruption recovery, concurrent writers."""

import multiprocessing as mp
import os
from dataclasses import replace

import numpy as np
import pytest

from neuronrank.data import stats_cache as store
from neuronrank.engine.statistics import get_stats
from neuronrank.config.requests import StatsRequest


@pytest.fixture
def req(tiny_dir, text_file):
    return StatsRequest(model=str(tiny_dir), calib=f"file:{text_file}", nsamples=4, seqlen=16, seed=0,
                        batch_size=2, topk=4)


def test_hit_after_miss_gives_identical_numbers(req):
    first = get_stats(req, recompute=True)
    second = get_stats(req)
    assert not first.cached and second.cached
    assert first.entry.key == second.entry.key
    np.testing.assert_array_equal(first.stats.tf, second.stats.tf)
    np.testing.assert_array_equal(first.stats.n_active, second.stats.n_active)
    np.testing.assert_array_equal(first.stats.top_window, second.stats.top_window)
    np.testing.assert_array_equal(first.stats.windows, second.stats.windows)
    for k in first.stats.input_sq:
        np.testing.assert_array_equal(first.stats.input_sq[k], second.stats.input_sq[k])
    assert second.entry in store.list_entries() or second.entry.key in [e.key for e in store.list_entries()]


@pytest.mark.parametrize("change", [dict(nsamples=5), dict(seqlen=12), dict(seed=1), dict(site="product"),
                                    dict(topk=3), dict(dtype="bf16")])
def test_any_parameter_change_is_a_miss(req, change):
    base = get_stats(req)
    other = get_stats(replace(req, **change))
    assert not other.cached and other.entry.key != base.entry.key
    assert get_stats(replace(req, batch_size=1)).cached  # batch size does not change the numbers


def test_changed_text_or_weights_is_a_miss(req, tmp_path, tiny_dir):
    from tests.conftest import write_tiny_model_dir

    base = get_stats(req)
    text = tmp_path / "other.txt"
    text.write_text(open(req.calib[5:]).read() + " extra words at the end")
    assert not get_stats(replace(req, calib=f"file:{text}")).cached
    other_model = write_tiny_model_dir(tmp_path / "m2", seed=7)  # same shapes, other weights
    res = get_stats(replace(req, model=str(other_model)))
    assert not res.cached and res.entry.key != base.entry.key


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest"])
def test_corrupted_entry_is_detected_and_recomputed(req, damage):
    good = get_stats(req)
    folder = good.entry.path
    target = folder / ("manifest.json" if damage == "manifest" else "stats.parquet")
    data = bytearray(target.read_bytes())
    if damage == "truncate":
        target.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "flip":
        data[len(data) // 2] ^= 0xFF  # same size, different content
        target.write_bytes(bytes(data))
    else:
        target.write_text("{not json")
    again = get_stats(req)
    assert not again.cached  # not silently used
    np.testing.assert_array_equal(again.stats.tf, good.stats.tf)
    assert store._valid(folder)


def _writer(req, barrier):
    barrier.wait()
    get_stats(req, recompute=True)


def test_concurrent_writers_leave_one_intact_entry(req):
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(req, barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    res = get_stats(req)
    assert res.cached and store._valid(res.entry.path)
    leftovers = [p for p in store.stats_root().iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_list_and_delete(req):
    entry = get_stats(req).entry
    assert entry.key in [e.key for e in store.list_entries()]
    store.delete_entry(entry.key)
    assert entry.key not in [e.key for e in store.list_entries()]
    assert not os.path.exists(entry.path)
