"""Sharded statistics under torchrun with 2 CPU ranks (gloo) equal the single-process result."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neuronrank.config.requests import StatsRequest
from neuronrank.data.stats_cache import get_entry, load_stats

REPO = Path(__file__).resolve().parents[3]


def test_share_covers_all_windows_once():
    from neuronrank.engine.distributed import share

    for n in (2, 5, 16):
        for world in (1, 2, 3):
            if n < world:
                continue
            parts = [share(n, r, world) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))


@pytest.mark.parametrize("site", ["gate", "product"])
def test_torchrun_two_cpu_ranks_equal_single_process(tiny_dir, text_file, tmp_path, site):
    args = ["--model", str(tiny_dir), "--calib", f"file:{text_file}", "--nsamples", "5", "--seqlen", "16",
            "--seed", "3", "--site", site, "--batch-size", "2", "--topk", "3"]
    # the single-process reference, in its own cache
    env = dict(os.environ, NEURONRANK_CACHE=str(tmp_path / "single"))
    single = subprocess.run([sys.executable, "-m", "neuronrank", "stats", *args, "--json"], env=env,
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert single.returncode == 0, single.stderr
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    env2 = dict(os.environ, NEURONRANK_CACHE=str(tmp_path / "sharded"), OMP_NUM_THREADS="1")
    sharded = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "neuronrank", "stats", *args,
                              "--json"], env=env2, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    out = [line for line in sharded.stdout.splitlines() if line.startswith("{")]
    assert len(out) == 1  # rank 0 alone reports
    key_s = json.loads(single.stdout.strip().splitlines()[-1])["cache_key"]
    key_d = json.loads(out[0])["cache_key"]
    assert key_s == key_d  # same inputs, same cache key
    a = _load(tmp_path / "single", key_s)
    b = _load(tmp_path / "sharded", key_d)
    assert b.meta["world_size"] == 2
    for f in ("sum_abs", "sum_act", "sum_sq"):
        np.testing.assert_allclose(getattr(b, f), getattr(a, f), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(b.n_active, a.n_active)
    np.testing.assert_array_equal(b.tokens, a.tokens)
    np.testing.assert_allclose(b.idf, a.idf, rtol=1e-12)
    for k in a.input_sq:
        np.testing.assert_allclose(b.input_sq[k], a.input_sq[k], rtol=1e-12)
    # the down_proj input's mean and FLAP's order-dependent fluctuation, folded in rank order
    np.testing.assert_allclose(b.down_input_mean(), a.down_input_mean(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(b.flap_fluctuation(), a.flap_fluctuation(), rtol=1e-9)
    np.testing.assert_array_equal(b.fluct["n"], a.fluct["n"])
    np.testing.assert_array_equal(b.top_vals, a.top_vals)
    np.testing.assert_array_equal(b.top_window, a.top_window)
    np.testing.assert_array_equal(b.top_pos, a.top_pos)
    np.testing.assert_array_equal(b.windows, a.windows)


def _load(cache, key):
    old = os.environ.get("NEURONRANK_CACHE")
    os.environ["NEURONRANK_CACHE"] = str(cache)
    try:
        return load_stats(get_entry(key))
    finally:
        os.environ["NEURONRANK_CACHE"] = old


def test_fewer_windows_than_ranks_is_refused(monkeypatch):
    from neuronrank import UserError
    from neuronrank.engine.statistics import _collect_sharded
    import torch

    monkeypatch.setattr("neuronrank.engine.distributed.init", lambda device: (0, 4))
    with pytest.raises(UserError, match="at least the number of ranks"):
        _collect_sharded(torch.nn.Linear(1, 1), torch.zeros(3, 4, dtype=torch.long), StatsRequest(), None)
