"""Resources running out: a full disk, an unusable cache folder, out of memory, an output that cannot be
written at the end — nothing half-written, nothing lost, one line; files follow the umask."""

import json
import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from neuronrank import UserError
from neuronrank.cli import main
from neuronrank.engine.statistics import get_stats
from neuronrank.runs.store import RunStore
from tests.faults.conftest import one_error_line, token_files


def test_unusable_cache_folder(capsys, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("NEURONRANK_CACHE", str(blocker / "cache"))  # a path below a regular file
    one_error_line(capsys, ["stats"], "cache folder")


def test_full_disk_while_writing_an_entry(tiny_dir, text_file, monkeypatch):
    import errno

    from neuronrank.data import stats_cache as store
    from neuronrank.engine.statistics import get_stats
    from neuronrank.config.requests import StatsRequest

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.np, "savez", full)
    req = StatsRequest(model=str(tiny_dir), calib=f"file:{text_file}", nsamples=2, seqlen=16, seed=77)
    with pytest.raises(UserError, match="No space left"):
        get_stats(req)
    assert not [p for p in store.stats_root().iterdir() if p.name.startswith(".")]  # nothing half-written
    monkeypatch.undo()
    assert not get_stats(req).cached


def test_out_of_memory_backs_off_the_batch(tiny, tiny_windows, monkeypatch):
    """A batch that does not fit is split in halves and retried; the numbers are unchanged."""
    from neuronrank.engine.models import decoder_body
    from neuronrank.engine.collect import batched, collect

    ref = collect(tiny, batched(tiny_windows, 6))
    body = decoder_body(tiny)
    real = body.forward
    calls = []

    def limited(*a, input_ids=None, **k):
        calls.append(input_ids.shape[0])
        if input_ids.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(*a, input_ids=input_ids, **k)

    monkeypatch.setattr(body, "forward", limited)
    got = collect(tiny, batched(tiny_windows, 6))
    assert calls[:3] == [6, 3, 1] or 6 in calls and max(c for c in calls if c <= 2) <= 2
    np.testing.assert_allclose(got.tf, ref.tf, rtol=1e-6)
    np.testing.assert_array_equal(got.n_active, ref.n_active)
    np.testing.assert_array_equal(got.tokens, ref.tokens)
    np.testing.assert_array_equal(got.top_window, ref.top_window)


def test_perplexity_backs_off_too(tiny, tiny_windows, monkeypatch):
    from neuronrank.evaluation.perplexity import perplexity
    from neuronrank.engine.models import decoder_body

    ref = perplexity(tiny, tiny_windows, batch_size=6).ppl
    body = decoder_body(tiny)
    real = body.forward

    def limited(*a, input_ids=None, **k):
        if input_ids.shape[0] > 1:
            raise torch.OutOfMemoryError("simulated")
        return real(*a, input_ids=input_ids, **k)

    monkeypatch.setattr(body, "forward", limited)
    assert perplexity(tiny, tiny_windows, batch_size=6).ppl == pytest.approx(ref, rel=1e-6)


def test_a_failed_write_at_the_end_keeps_the_perplexities(capsys, tiny_dir, text_file, tmp_path, monkeypatch):
    from neuronrank.prune import export
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
