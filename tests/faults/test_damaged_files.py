"""Damaged or stale files never give wrong numbers: every cached artefact (statistics entry, token cache,
dense perplexity, run store) is verified on load, set aside or recomputed, and said in one line. Each test
corrupts the bytes as the reliability probe did and asserts on the data afterwards."""

import json
import os
from dataclasses import replace

import numpy as np
import pytest

from neuronrank import UserError
from neuronrank.cli import main
from neuronrank.data import stats_cache as store
from neuronrank.data import tokens
from neuronrank.data.text import load_corpus
from neuronrank.data.paths import cache_dir
from neuronrank.engine.statistics import get_stats
from neuronrank.runs.store import RunStore
from tests.faults.conftest import REPO, token_files


# ----------------------------------------------------------------------------------------------
# silently wrong: every cached artefact is verified on load


def _token_file_for(req):
    from neuronrank.engine import models

    tok = models.load_tokenizer(req.model)
    ids = tokens.token_stream(tok, load_corpus(req.calib))
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
    assert again.entry.params["tokens_sha256"] == tokens.token_checksum(ids)


def test_out_of_range_token_ids_are_re_tokenized_not_an_index_error(req):
    clean = get_stats(req, recompute=True)
    path, ids = _token_file_for(req)
    bad = ids.copy()
    bad[::7] = 10_000_000  # beyond any vocabulary; the sidecar is made to agree, so only the range check sees it
    np.save(path, bad)
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["sha256"] = tokens.token_checksum(bad)
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
    from neuronrank.engine import models
    from neuronrank.evaluation.perplexity import measure_ppl

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
        from neuronrank.evaluation.perplexity import _body_sha256

        rec["result"]["windows"] = 3
        rec["sha256"] = _body_sha256(rec["result"])
        path.write_text(json.dumps(rec))
    again, cached = measure_ppl(model, tok, f"file:{text_file}", 16, 4, ident)
    assert not cached and again.ppl == clean.ppl and again.nll == clean.nll
    assert json.loads(path.read_text())["result"]["ppl"] == clean.ppl  # rewritten whole


# ----------------------------------------------------------------------------------------------
# stranded: the queue recovers, dead runs are marked, temporaries go, a damaged store is replaced


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
    from neuronrank.data import paths

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
    from neuronrank.data import paths

    paths._checked_sqlite.clear()
    assert main(["ppl", "--model", str(tiny_dir), "--eval", f"file:{text_file}", "--eval-seqlen", "16",
                 "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out.strip().splitlines()[-1])["ppl"] > 0
    assert list(own_cache.glob("runs.sqlite.damaged-*"))


# ----------------------------------------------------------------------------------------------
# odd input


def test_delete_of_a_vanished_entry_is_quiet_for_internal_callers():
    from neuronrank.data import stats_cache as store

    store.delete_entry("0123456789abcdef", missing_ok=True)
    with pytest.raises(UserError, match="no cache entry"):
        store.delete_entry("0123456789abcdef")


def test_resaving_a_model_folder_changes_its_identity(tmp_path):
    from neuronrank.engine import models
    from tests.conftest import write_tiny_model_dir

    folder = write_tiny_model_dir(tmp_path / "m")
    before = models.resolve(str(folder)).identity()
    weights = next(folder.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert models.resolve(str(folder)).identity() != before


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
    options = at.selectbox(key="_entry_select").options
    assert len(options) == 1, options  # the damaged manifest's entry is not offered
    assert damaged.entry.key in at.sidebar.success[0].value  # the loaded entry, described with its key


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
    assert json.loads(path.with_suffix(".json").read_text())["sha256"] == tokens.token_checksum(ids)


def test_a_damaged_run_record_is_a_failed_row_and_the_prune_page_still_draws(own_cache, tiny_dir, text_file,
                                                                             caplog):
    """A record whose result holds junk numbers shows them as missing; one whose stored JSON is unreadable is
    listed as failed with one warning; the Prune page's history and comparison draw around both."""
    import sqlite3

    from streamlit.testing.v1 import AppTest

    from neuronrank.config.requests import StatsRequest
    from neuronrank.views.history import runs_frame

    entry = get_stats(StatsRequest(model=str(tiny_dir), calib=f"file:{text_file}", nsamples=4, seqlen=16, seed=0,
                                   batch_size=2)).entry
    runs = RunStore()
    params = {"prune_method": "magnitude", "sparsity_type": "unstructured", "sparsity_ratio": 0.5,
              "model": str(tiny_dir)}
    good = runs.create("prune", params, status="running")
    runs.finish(good, "done", {"dense_ppl": 10.0, "pruned_ppl": 12.5, "sparsity": {"mlp": 0.5},
                               "protocol": {"source": "wiki", "seqlen": 16, "windows": 4}})
    junk = runs.create("prune", params, status="running")
    runs.finish(junk, "done", {"dense_ppl": 10.0, "pruned_ppl": "junk", "sparsity": "junk",
                               "protocol": {"source": "wiki", "seqlen": 16, "windows": 4}})
    broken = runs.create("prune", params, status="running")
    runs.finish(broken, "done", {"pruned_ppl": 3.0})
    with sqlite3.connect(own_cache / "runs.sqlite") as db:
        db.execute("UPDATE runs SET params=?, result=? WHERE id=?", ("{not json", "[1, 2", broken))

    with caplog.at_level("WARNING"):
        listed = {r["id"]: r for r in RunStore().list(kind="prune")}
        RunStore().list(kind="prune")
    assert listed[broken]["status"] == "failed" and listed[broken]["result"] is None
    assert sum(f"run {broken}:" in m for m in caplog.messages) == 1  # said once
    frame = runs_frame(list(listed.values())).set_index("run")
    assert frame.loc[good, "pruned_ppl"] == 12.5
    assert np.isnan(frame.loc[junk, "pruned_ppl"]) and np.isnan(frame.loc[junk, "mlp_sparsity"])

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.session_state["entry_key"] = entry.key
    at.run()
    at.switch_page("app_pages/4_prune.py").run()
    assert not at.exception, [e.value for e in at.exception]
