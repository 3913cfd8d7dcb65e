"""Issue 11, case by case: each test does what the reliability probe did (corrupt the bytes, kill the
process with the signal, truncate the file) and asserts on the data afterwards — numbers equal to a
clean run, the run's status, no leftovers."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from neuronrank import corpora, jobs, store
from neuronrank.cli import main
from neuronrank.paths import cache_dir
from neuronrank.pipeline import get_stats
from neuronrank.requests import StatsRequest
from neuronrank.runs import RunStore, process_start

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def req(tiny_dir, text_file):
    return StatsRequest(model=str(tiny_dir), calib=f"file:{text_file}", nsamples=4, seqlen=16, seed=3,
                        batch_size=2, topk=4)


@pytest.fixture(scope="module")
def long_text(tmp_path_factory, text_file):
    """~260k tokens of distinct documents: long enough for runs that must still be going when killed."""
    base = text_file.read_text()
    path = tmp_path_factory.mktemp("long") / "long.txt"
    path.write_text("\n\n".join(f"Part {i}. {base}" for i in range(1000)))
    return path


def token_files():
    return sorted((cache_dir() / "tokens").glob("*.npy"))


def one_error_line(capsys, argv, needle, code=2):
    assert main(argv) == code
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error:"), err
    assert needle in err[0], err[0]
    return err[0]


def wait_for(pred, timeout=120, what="condition"):
    t = time.time()
    while time.time() - t < timeout:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# ----------------------------------------------------------------------------------------------
# silently wrong: every cached artefact is verified on load


def _token_file_for(req):
    from neuronrank import models

    tok = models.load_tokenizer(req.model)
    ids = corpora.token_stream(tok, corpora.load_corpus(req.calib))
    path = next(p for p in token_files() if np.array_equal(np.load(p), ids))
    return path, ids


@pytest.mark.parametrize("recompute", [False, True])
def test_same_size_garbage_in_the_token_cache_never_reaches_the_statistics(req, recompute):
    clean = get_stats(req, recompute=True)
    path, ids = _token_file_for(req)
    raw = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    body = rng.integers(0, 50, size=len(ids), dtype=np.int32).tobytes()  # in-range ids: only sha256 sees it
    raw[len(raw) - len(body):] = body
    path.write_bytes(bytes(raw))
    again = get_stats(req, recompute=recompute)
    assert again.entry.key == clean.entry.key
    np.testing.assert_array_equal(again.stats.n_active, clean.stats.n_active)
    np.testing.assert_array_equal(again.stats.tf, clean.stats.tf)
    np.testing.assert_array_equal(np.load(path), ids)  # re-tokenized and rewritten
    assert again.entry.params["tokens_sha256"] == corpora.token_checksum(ids)


def test_out_of_range_token_ids_are_re_tokenized_not_an_index_error(req):
    clean = get_stats(req, recompute=True)
    path, ids = _token_file_for(req)
    bad = ids.copy()
    bad[::7] = 10_000_000  # beyond any vocabulary; the sidecar is made to agree, so only the range check sees it
    np.save(path, bad)
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["sha256"] = corpora.token_checksum(bad)
    meta_path.write_text(json.dumps(meta))
    again = get_stats(req, recompute=True)
    np.testing.assert_array_equal(again.stats.tf, clean.stats.tf)
    np.testing.assert_array_equal(np.load(path), ids)


def test_the_key_depends_on_the_tokens_used(req):
    res = get_stats(req)
    assert res.entry.params["tokens_sha256"] == res.entry.manifest["params"]["tokens_sha256"]
    other = dict(res.entry.params, tokens_sha256="0" * 64)
    assert store.stats_key(other) != res.entry.key


def test_the_app_loader_verifies_sha256(req):
    """store.load_stats is what ui.load_entry calls: a same-size edit of stats.parquet is refused."""
    good = get_stats(req)
    target = good.entry.path / "stats.parquet"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(store.CorruptEntry, match="does not match its manifest") as info:
        store.load_stats(good.entry.key)
    assert info.value.key == good.entry.key
    again = get_stats(req)  # the CLI / worker path recomputes it
    assert not again.cached
    np.testing.assert_array_equal(again.stats.tf, good.stats.tf)
    assert "store.load_stats(" in (REPO / "ui.py").read_text()


def test_the_app_shows_a_damaged_entry_as_an_error_and_removes_it(req):
    from streamlit.testing.v1 import AppTest

    good = get_stats(replace(req, seed=31))
    target = good.entry.path / "stats.parquet"
    data = bytearray(target.read_bytes())
    data[len(data) // 3] ^= 0x55
    target.write_bytes(bytes(data))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.session_state["entry_key"] = good.entry.key
    at.run()  # the Statistics page shows the loaded entry's per-layer summary
    assert any("was damaged" in e.value for e in at.error), [e.value for e in at.error]
    assert not at.exception
    assert not good.entry.path.exists()  # removed, to be computed again; never shown


@pytest.mark.parametrize("damage", ["number", "garbage", "protocol"])
def test_damaged_dense_ppl_cache_is_measured_again(tiny_dir, text_file, damage):
    from neuronrank import models
    from neuronrank.pipeline import measure_ppl

    model, tok = models.load(str(tiny_dir))
    ident = {"test": damage}
    clean, cached = measure_ppl(model, tok, f"file:{text_file}", 16, 4, ident)
    assert not cached
    assert measure_ppl(model, tok, f"file:{text_file}", 16, 4, ident)[1]  # a valid file is used
    path = max((cache_dir() / "ppl").glob("*.json"), key=lambda p: p.stat().st_mtime)
    rec = json.loads(path.read_text())
    if damage == "number":
        path.write_text(path.read_text().replace(repr(rec["result"]["ppl"]), "1.5"))
    elif damage == "garbage":
        path.write_bytes(os.urandom(path.stat().st_size))
    else:  # internally consistent but not this protocol: checksum fixed up
        from neuronrank.pipeline import _body_sha256

        rec["result"]["windows"] = 3
        rec["sha256"] = _body_sha256(rec["result"])
        path.write_text(json.dumps(rec))
    again, cached = measure_ppl(model, tok, f"file:{text_file}", 16, 4, ident)
    assert not cached and again.ppl == clean.ppl and again.nll == clean.nll
    assert json.loads(path.read_text())["result"]["ppl"] == clean.ppl  # rewritten whole


# ----------------------------------------------------------------------------------------------
# stranded: the queue recovers, dead runs are marked, temporaries go, a damaged store is replaced


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A cache of its own (dispatcher log and lock), the shared converted models linked in."""
    root = tmp_path / "cache"
    root.mkdir()
    (root / "models").symlink_to(REPO / "cache" / "models", target_is_directory=True)
    monkeypatch.setenv("NEURONRANK_CACHE", str(root))
    return root


def dispatcher_starts(root: Path) -> int:
    log = root / "logs" / "dispatcher.log"
    return sum(" dispatcher " in line and "slot(s)" in line for line in log.read_text().splitlines()) \
        if log.exists() else 0


def lock_free(root: Path) -> bool:
    import fcntl

    with open(root / "dispatcher.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True


def test_sixteen_concurrent_submits_start_one_dispatcher(own_cache, tiny_dir, text_file):
    code = ("import sys; from neuronrank import jobs; jobs.submit('stats', {'model': sys.argv[1], "
            "'calib': 'file:' + sys.argv[2], 'nsamples': 2, 'seqlen': 16, 'seed': int(sys.argv[3])})")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tiny_dir), str(text_file), str(i)], env=env)
             for i in range(16)]
    assert [p.wait(120) for p in procs] == [0] * 16
    store_ = RunStore()
    runs = store_.list()
    assert len(runs) == 16
    time.sleep(1.0)
    assert dispatcher_starts(own_cache) == 1
    for r in runs:
        jobs.cancel(r["id"])
    wait_for(lambda: lock_free(own_cache), 60, "the dispatcher to exit")
    assert {r["status"] for r in store_.list()} <= {"cancelled", "done"}


def test_a_killed_dispatcher_strands_nothing(own_cache, tiny_dir, text_file, long_text):
    store_ = RunStore()
    params = dict(model=str(tiny_dir), calib=f"file:{long_text}", nsamples=600, seqlen=64, batch_size=1)
    a = jobs.submit("stats", {**params, "seed": 1})
    b = jobs.submit("stats", {**params, "calib": f"file:{text_file}", "nsamples": 2, "seqlen": 16, "seed": 2})
    run = wait_for(lambda: (r := store_.get(a))["pid"] and r["progress"] > 0 and r, 120, "run a to start")
    os.kill(run["owner"], signal.SIGKILL)  # the dispatcher; its worker goes on in its own session
    wait_for(lambda: lock_free(own_cache), 10, "the lock to be released")
    done_a = wait_for(lambda: store_.get(a)["status"] != "running" and store_.get(a), 300, "run a to end")
    assert done_a["status"] == "done", done_a["error"]
    time.sleep(1.0)
    assert RunStore().queued_count() == 1  # nobody serves the queue ...
    assert jobs.recover() is True  # ... until someone looks at it (a page's poll, the CLI)
    assert jobs.recover() is False  # one dispatcher at a time
    done_b = wait_for(lambda: store_.get(b)["status"] not in ("queued", "running") and store_.get(b), 180, "b")
    assert done_b["status"] == "done", done_b["error"]
    assert dispatcher_starts(own_cache) == 2


def test_slots_run_as_many_runs_at_once_as_configured(own_cache, tiny_dir, long_text, monkeypatch):
    monkeypatch.setenv("NEURONRANK_SLOTS", "2")
    store_ = RunStore()
    params = dict(model=str(tiny_dir), calib=f"file:{long_text}", nsamples=200, seqlen=64, batch_size=1)
    ids = [jobs.submit("stats", {**params, "seed": s}) for s in (1, 2)]
    both = wait_for(lambda: all(store_.get(i)["status"] == "running" and store_.get(i)["pid"] for i in ids)
                    and [store_.get(i) for i in ids], 120, "both runs running")
    assert sorted(r["slot"] for r in both) == [0, 1]
    ends = [wait_for(lambda i=i: store_.get(i)["status"] == "done" and store_.get(i), 300, "done") for i in ids]
    assert max(r["started"] for r in ends) < min(r["finished"] for r in ends)  # they overlapped


def test_slot_devices_follow_the_visible_gpus(monkeypatch):
    monkeypatch.delenv("NEURONRANK_SLOTS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert jobs.slot_devices() == [None]  # a CPU: one slot
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert jobs.slot_devices() == ["2", "5"]
    monkeypatch.setenv("NEURONRANK_SLOTS", "3")
    assert jobs.slot_devices() == ["2", "5", "2"]
    monkeypatch.setenv("NEURONRANK_SLOTS", "zero")
    assert jobs.slot_devices() == ["2", "5"]
    started = {}

    class FakePopen:
        pid = os.getpid()

        def __init__(self, argv, env, **kw):
            started["env"] = env

    monkeypatch.setattr(jobs.subprocess, "Popen", FakePopen)
    rid = RunStore().create("stats", {}, status="running")
    jobs._start_worker(RunStore(), RunStore().get(rid), "5")
    assert started["env"]["CUDA_VISIBLE_DEVICES"] == "5"
    RunStore().finish(rid, "cancelled")


def _cli_prune(tiny_dir, long_text, *extra):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "neuronrank", "prune", "--model", str(tiny_dir), "--calib",
            f"file:{long_text}", "--nsamples", "3000", "--seqlen", "64", "--eval", f"file:{long_text}",
            "--eval-seqlen", "16", "--sparsity_ratio", "0.5", "--seed", "123", *extra]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _cli_run_of(proc):
    return wait_for(lambda: next((r for r in RunStore().list(kind="prune") if r["pid"] == proc.pid
                                  and r["progress"] > 0.05), None), 180, "the CLI run to start its work")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_cli_run_never_stays_running(tiny_dir, long_text, sig):
    proc = _cli_prune(tiny_dir, long_text)
    run = _cli_run_of(proc)
    assert run["status"] == "running" and run["pid_start"] == process_start(proc.pid)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    after = RunStore().get(run["id"])  # the next read of the store settles it
    if sig == signal.SIGTERM:
        assert proc.returncode == 143
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines == ["error: terminated by SIGTERM"], err
        assert after["status"] == "cancelled" and after["error"] == "terminated by SIGTERM"
    else:
        assert proc.returncode == -signal.SIGKILL
        assert after["status"] == "failed" and "is gone" in after["error"]


def test_a_reused_pid_does_not_keep_a_dead_run_running():
    store_ = RunStore()
    rid = store_.create("ppl", {}, status="running", origin="cli", pid=os.getpid())
    live = store_.create("ppl", {}, status="running", origin="cli", pid=os.getpid())
    with store_._connect() as db:  # the pid now belongs to another process: its start time differs
        db.execute("UPDATE runs SET pid_start=pid_start-1 WHERE id=?", (rid,))
    assert store_.get(rid)["status"] == "failed"
    assert store_.get(live)["status"] == "running"
    store_.finish(live, "cancelled")


def test_stale_temporaries_are_removed_on_the_next_listing_or_write(req, tmp_path):
    import fcntl

    root = store.stats_root()
    root.mkdir(parents=True, exist_ok=True)
    old = time.time() - 3600
    stale, fresh, held = root / ".deadbeef.abc123", root / ".deadbeef.fresh1", root / ".deadbeef.held12"
    for folder in (stale, fresh, held):
        folder.mkdir()
        (folder / "stats.parquet").write_bytes(os.urandom(1 << 20))
    for folder in (stale, held):
        os.utime(folder, (old, old))
    tokens = cache_dir() / "tokens"
    tokens.mkdir(exist_ok=True)
    tok_tmp = tokens / ".x.npy.abc.tmp"
    tok_tmp.write_bytes(b"partial")
    os.utime(tok_tmp, (old, old))
    fd = os.open(held, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a writer still at work, however old its folder looks
    try:
        store.list_entries()
        assert not stale.exists() and fresh.exists() and held.exists()
    finally:
        os.close(fd)
    text = tmp_path / "new.txt"
    text.write_text("A text never tokenized before. " * 40)
    get_stats(replace(req, calib=f"file:{text}", seed=41))  # a write into the token cache
    assert not tok_tmp.exists()
    assert not held.exists()  # once its writer let go, the next write removed it
    import shutil

    shutil.rmtree(fresh)


def test_a_save_model_killed_half_way_is_cleaned_up(tmp_path):
    from neuronrank.export import PARTIAL
    from neuronrank.paths import sweep_stale

    mine, theirs = tmp_path / ".out.tmp", tmp_path / ".their.tmp"
    for folder in (mine, theirs):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"x" * 100)
        os.utime(folder, (time.time() - 3600,) * 2)
    (mine / PARTIAL).touch()
    os.utime(mine, (time.time() - 3600,) * 2)
    from neuronrank import export

    sweep_stale(tmp_path, match=lambda p: p.name.endswith(".tmp") and (p / export.PARTIAL).exists())
    assert not mine.exists() and theirs.exists()  # a user's own hidden folder is not ours to delete


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_damaged_run_store_is_moved_aside_and_replaced(own_cache, damage, caplog):
    path = own_cache / "runs.sqlite"
    first = RunStore()
    for i in range(300):
        first.create("ppl", {"model": "m" * 200, "i": i}, status="queued")
    with first._connect() as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3] if damage == "truncate" else b"\0" * 100 + os.urandom(len(raw) - 100))
    kept = path.read_bytes()
    from neuronrank import paths

    paths._checked_sqlite.clear()  # as a fresh process would
    with caplog.at_level("WARNING"):
        fresh = RunStore()
    assert fresh.notice and "moved" in fresh.notice and "fresh run store" in fresh.notice
    aside = list(own_cache.glob("runs.sqlite.damaged-*"))
    aside = [p for p in aside if not p.name.endswith("-wal")]
    assert len(aside) == 1 and aside[0].read_bytes() == kept  # kept, not deleted
    rid = fresh.create("ppl", {"model": "x"})
    assert fresh.get(rid)["status"] == "queued" and len(fresh.list()) == 1
    assert len([r for r in caplog.records if "was damaged" in r.getMessage()]) == 1
    assert RunStore().notice is None  # said once


def test_the_cli_goes_on_after_replacing_a_damaged_run_store(own_cache, tiny_dir, text_file, capsys):
    RunStore()
    (own_cache / "runs.sqlite").write_bytes(b"this is not a database" * 100)
    from neuronrank import paths

    paths._checked_sqlite.clear()
    assert main(["ppl", "--model", str(tiny_dir), "--eval", f"file:{text_file}", "--eval-seqlen", "16",
                 "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out.strip().splitlines()[-1])["ppl"] > 0
    assert list(own_cache.glob("runs.sqlite.damaged-*"))


# ----------------------------------------------------------------------------------------------
# thrown away: output targets are checked before loading; a failed write keeps the results


@pytest.fixture
def no_model_load(monkeypatch):
    from neuronrank import models

    def boom(*a, **k):
        raise AssertionError("the model was loaded before the output target was checked")

    monkeypatch.setattr(models, "load", boom)


@pytest.mark.parametrize("flag,target,needle", [
    ("--save", "/proc/neuronrank-x", "cannot write in /proc"),
    ("--save", "FILE", "exists and is not a folder"),
    ("--save_model", "/proc/neuronrank-x", "cannot write in /proc"),
    ("--save_model", "FILE", "exists and is not a saved model"),
    ("--save_model", "NONEMPTY", "exists and is not a saved model"),
])
def test_prune_output_targets_are_checked_before_the_model_loads(capsys, tiny_dir, text_file, tmp_path,
                                                                  no_model_load, flag, target, needle):
    if target == "FILE":
        target = tmp_path / "taken.txt"
        target.write_text("x")
    elif target == "NONEMPTY":
        target = tmp_path / "full"
        target.mkdir()
        (target / "notes.txt").write_text("keep me")
    n_runs = len(RunStore().list())
    one_error_line(capsys, ["prune", "--model", str(tiny_dir), "--calib", f"file:{text_file}", "--eval",
                            f"file:{text_file}", "--eval-seqlen", "16", flag, str(target)], needle)
    assert len(RunStore().list()) == n_runs  # refused before a run was even recorded


@pytest.mark.parametrize("target,needle", [("/proc/x.parquet", "cannot write in /proc"),
                                           ("DIR", "is a folder")])
def test_stats_out_is_checked_before_the_model_loads(capsys, tiny_dir, text_file, tmp_path, no_model_load,
                                                     target, needle):
    if target == "DIR":
        target = tmp_path / "d.parquet"
        target.mkdir()
    one_error_line(capsys, ["stats", "--model", str(tiny_dir), "--calib", f"file:{text_file}", "--nsamples", "2",
                            "--seqlen", "16", "--seed", "55", "--out", str(target)], needle)


def test_a_failed_write_at_the_end_keeps_the_perplexities(capsys, tiny_dir, text_file, tmp_path, monkeypatch):
    from neuronrank import export
    from neuronrank.errors import UserError

    def disk_full(folder, *a, **k):
        raise UserError(f"cannot write results to {folder}: No space left on device")

    monkeypatch.setattr(export, "save_results", disk_full)
    save = tmp_path / "results"
    code = main(["prune", "--model", str(tiny_dir), "--prune_method", "magnitude", "--eval", f"file:{text_file}",
                 "--eval-seqlen", "16", "--save", str(save), "--json"])
    out = capsys.readouterr()
    assert code == 1
    err = [line for line in out.err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: not written: --save") and "No space left" in err[0]
    assert "kept in the run store as run" in err[0]
    payload = json.loads(out.out.strip().splitlines()[-1])
    run = RunStore().get(payload["run_id"])
    assert run["status"] == "done" and run["result"]["pruned_ppl"] == payload["pruned_ppl"] > 0
    assert run["result"]["not_written"][0]["target"] == "--save"


# ----------------------------------------------------------------------------------------------
# odd input


def test_negative_seed_is_one_line_in_the_cli_and_the_app(capsys, tiny_dir, text_file):
    for cmd in (["stats"], ["prune", "--eval", f"file:{text_file}"]):
        one_error_line(capsys, [*cmd, "--model", str(tiny_dir), "--calib", f"file:{text_file}", "--seed", "-1"],
                       "seed must be between 0 and 2147483647 (got -1)")
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.run()
    seed = at.number_input(key="sb_seed")
    assert seed.min == 0  # the widget refuses it; a run reaching the library gets the same line:
    with pytest.raises(Exception, match=r"seed must be between 0 and 2147483647 \(got -1\)"):
        StatsRequest(seed=-1).validate()


def test_huge_nsamples_is_refused_or_announced(capsys, tiny_dir, text_file, caplog, monkeypatch):
    one_error_line(capsys, ["stats", "--model", str(tiny_dir), "--calib", f"file:{text_file}", "--nsamples",
                            "1000000", "--seqlen", "2"], "times the text's")
    from neuronrank import pipeline

    monkeypatch.setattr(pipeline, "LARGE_TOKENS", 100)
    with caplog.at_level("WARNING"):
        get_stats(StatsRequest(model=str(tiny_dir), calib=f"file:{text_file}", nsamples=40, seqlen=16, seed=8))
    said = [r.getMessage() for r in caplog.records]
    assert any("40 windows x 16 tokens = 640 tokens" in m for m in said), said
    assert any("windows repeat" in m for m in said), said


def test_cache_folders_respect_the_umask(req):
    old = os.umask(0o002)
    try:
        res = get_stats(replace(req, seed=71, calib=req.calib), recompute=True)
    finally:
        os.umask(old)
    assert res.entry.path.stat().st_mode & 0o777 == 0o775
    for f in res.entry.path.iterdir():
        assert f.stat().st_mode & 0o777 == 0o664, f
    for f in token_files():
        assert f.stat().st_mode & 0o077 != 0, f  # not owner-only


# ----------------------------------------------------------------------------------------------
# one damaged file never takes a feature down


@pytest.mark.parametrize("garbage", [b"\x89PNG\xff\xfe\x00\x13garbage", b"{}", b"[]"])
def test_one_damaged_manifest_is_skipped_reported_once_and_recomputed(own_cache, req, garbage, capsys, caplog):
    other = get_stats(replace(req, seed=41))
    damaged = get_stats(replace(req, seed=42))
    (damaged.entry.path / "manifest.json").write_bytes(garbage)
    with caplog.at_level("WARNING"):
        for _ in range(3):  # the app lists on every change of the folder; the CLI on every run
            keys = [e.key for e in store.list_entries()]
            assert keys == [other.entry.key]
    said = [r.getMessage() for r in caplog.records if "cache entry skipped" in r.getMessage()]
    assert len(said) == 1 and damaged.entry.key in said[0] and "\n" not in said[0], said
    base = ["stats", "--model", req.model, "--calib", req.calib, "--nsamples", "4", "--seqlen", "16",
            "--batch-size", "2", "--topk", "4", "--json"]
    assert main([*base, "--seed", "41"]) == 0  # any other key: as before
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["cached"] is True
    assert main([*base, "--seed", "42"]) == 0  # the damaged key: computed again, the same numbers
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["cached"] is False and out["cache_key"] == damaged.entry.key
    again = store.load_stats(damaged.entry.key)
    np.testing.assert_array_equal(again.tf, damaged.stats.tf)
    np.testing.assert_array_equal(again.n_active, damaged.stats.n_active)
    from streamlit.testing.v1 import AppTest

    (other.entry.path / "manifest.json").write_bytes(garbage)  # the app lists around one too
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    options = at.selectbox(key="_entry_select").options  # labels end with the key's first 8 characters
    assert len(options) == 1 and options[0].endswith(damaged.entry.key[:8]), options


def test_a_token_sidecar_that_is_not_an_object_is_re_tokenized(own_cache, req, capsys):
    clean = get_stats(req, recompute=True)
    path, ids = _token_file_for(req)
    path.with_suffix(".json").write_text("[]")
    argv = ["stats", "--model", req.model, "--calib", req.calib, "--nsamples", "4", "--seqlen", "16",
            "--seed", "3", "--batch-size", "2", "--topk", "4", "--recompute", "--json"]
    assert main(argv) == 0, capsys.readouterr().err
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    again = store.load_stats(json.loads(captured.out.strip().splitlines()[-1])["cache_key"])
    np.testing.assert_array_equal(again.tf, clean.stats.tf)
    assert json.loads(path.with_suffix(".json").read_text())["sha256"] == corpora.token_checksum(ids)
