"""The run store's parts a watching page and a sweep use: the stamp (moves on writes only), the activity
(one small query), identical runs found, sweeps stored with their axes."""

import time

from neuronrank.config.requests import PruneRequest, sweep_axes
from neuronrank.queue import jobs
from neuronrank.runs.store import RunStore
from neuronrank.views import history


def test_stamp_moves_on_writes_not_on_reads(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    before = store.stamp()
    store.list(kind="prune")
    store.activity("prune")
    RunStore(tmp_path / "runs.sqlite").activity("prune")  # a page opening the store to look
    assert store.stamp() == before
    rid = store.create("prune", {"a": 1})
    after_create = store.stamp()
    assert after_create != before
    time.sleep(0.01)
    store.progress(rid, 0.5, "x")  # queued: nothing changes (progress is only for running runs)
    store.finish(rid, "done", result={})
    assert store.stamp() != after_create


def test_activity_changes_when_a_run_is_queued_starts_or_ends_not_on_progress(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    empty = store.activity("prune")
    assert empty == (None, ())
    rid = store.create("prune", {"a": 1}, status="running")
    running = store.activity("prune")
    assert running == (rid, ((rid, "running"),)) and running != empty
    store.progress(rid, 0.4, "pruned perplexity: 10/20 tokens")
    assert store.activity("prune") == running  # a progress write: the same activity, no rerun
    assert store.activity("search") == (None, ())  # another kind's page is not disturbed
    store.finish(rid, "done", result={})
    assert store.activity("prune") == (rid, ())


def test_find_same_prefers_a_finished_run(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    p = {"prune_method": "wanda", "sparsity_ratio": 0.5}
    a = store.create("prune", p)
    store.finish(a, "failed", error="x")
    assert store.find_same("prune", p) is None  # a failed run is no answer
    b = store.create("prune", p)
    assert store.find_same("prune", p)["id"] == b  # queued: under way
    c = store.create("prune", p)
    store.finish(c, "done", result={"pruned_ppl": 3.0})
    assert store.find_same("prune", p)["id"] == c
    assert store.find_same("prune", {**p, "sparsity_ratio": 0.6}) is None
    assert store.find_same("ppl", p) is None


def test_a_sweep_stores_its_axes_and_reuses_identical_finished_runs(tmp_path, monkeypatch):
    """x = α (values 1), y = γ (0, 1): the landscape has α on x and γ on y, and the cell an earlier
    run measured (same normalized request) is that run, not a new one."""
    store = RunStore(tmp_path / "runs.sqlite")
    base = PruneRequest(model="m", calib="news", eval="wiki", alpha=1.0, beta=1.0, gamma=1.0)
    earlier, reused = jobs.reuse_or_submit("prune", base, store=store,
                                           start_dispatcher=False)
    assert not reused
    store.finish(earlier, "done", result={"pruned_ppl": 42.0, "protocol": {}})
    sweep = sweep_axes(base, "alpha", "1", "gamma", "0, 1")
    cells = jobs.submit_sweep(sweep, "alpha", "gamma", "sweep-0000abcd", store=store, start_dispatcher=False)
    assert [(c["x"], c["y"], c["reused"]) for c in cells] == [(1.0, 0.0, False), (1.0, 1.0, True)]
    assert cells[1]["run"] == earlier
    assert len(store.list(group="sweep-0000abcd")) == 1  # only the new cell was queued
    (sw,) = store.sweeps()
    assert (sw["x"], sw["y"], sw["xs"], sw["ys"]) == ("alpha", "gamma", [1.0], [0.0, 1.0])
    # the page's listing and grid: α on x, γ on y, the reused cell's number in its place
    runs = store.list(kind="prune")
    groups = history.sweep_groups(runs, store.sweeps())
    row = groups.set_index("group").loc["sweep-0000abcd"]
    assert (row["x"], row["y"], row["runs"], row["done"], row["reused"]) == ("alpha", "gamma", 2, 1, 1)
    grid = history.landscape(store.get_many([c["run"] for c in cells]), "alpha", "gamma", cells=row["cells"])
    assert list(grid.columns) == [1.0] and list(grid.index) == [0.0, 1.0]
    assert grid.loc[1.0, 1.0] == 42.0 and grid.loc[0.0, 1.0] != grid.loc[0.0, 1.0]  # NaN: not finished
    # the same sweep again queues nothing: every cell is under way or done
    again = jobs.submit_sweep(sweep, "alpha", "gamma", "sweep-0000abce", store=store, start_dispatcher=False)
    assert all(c["reused"] for c in again) and [c["run"] for c in again] == [c["run"] for c in cells]


def test_the_activity_stamp_moves_when_runs_come_and_go_not_on_progress_or_reads(tmp_path):
    """What a browser tab polls (runs-activity/stamp, served as a file): a new value on every create, claim, finish
    and reap, the same value on reads and progress writes; alone in its folder, never half-written."""
    import os

    from neuronrank.runs import store as run_store

    path = tmp_path / "runs.sqlite"
    store = RunStore(path)
    stamp = run_store.activity_file(path)
    assert stamp == tmp_path / "runs-activity" / "stamp"
    first = run_store.read_activity(path)
    assert first  # a fresh store has one: a watcher's first fetch finds the file
    store.list(kind="prune"), store.activity("prune"), RunStore(path).get_many([])
    assert run_store.read_activity(path) == first
    seen = [first]

    def moved():
        now = run_store.read_activity(path)
        assert now not in seen, (now, seen)
        seen.append(now)

    rid = store.create("prune", {"a": 1})
    moved()
    claimed = store.claim_next(pid=os.getpid())
    assert claimed["id"] == rid
    moved()
    store.progress(rid, 0.5, "half")
    assert run_store.read_activity(path) == seen[-1]  # progress: no rerun of watching pages
    assert store.finish(rid, "done", result={})
    moved()
    assert not store.finish(rid, "failed")  # nothing changed: the stamp stays
    assert run_store.read_activity(path) == seen[-1]
    dead = store.create("prune", {"b": 1}, status="running", pid=2**22 + 12345)  # a pid that is not running
    moved()
    assert store.reap() == 1 and store.get(dead)["status"] == "failed"
    moved()
    assert sorted(p.name for p in stamp.parent.iterdir()) == ["stamp"]  # nothing else to serve, no temp left


def test_an_unwritable_stamp_never_fails_the_store(tmp_path, caplog):
    from neuronrank.runs import store as run_store

    path = tmp_path / "runs.sqlite"
    store = RunStore(path)
    folder = run_store.activity_file(path).parent
    (folder / "stamp").unlink()
    folder.rmdir()
    folder.write_text("not a folder")  # the stamp cannot be written
    rid = store.create("prune", {"a": 1})
    assert store.get(rid)["status"] == "queued" and run_store.read_activity(path) == ""
