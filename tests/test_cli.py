"""The command line: contract output, and one `error:` line with exit code 2 on bad input."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from neuronrank.cli import main


def run_cli(*args, timeout=300):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "neuronrank", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=os.path.dirname(os.path.dirname(__file__)))


def test_stats_command_writes_the_contract_table(tiny_dir, text_file, tmp_path):
    out = tmp_path / "s.parquet"
    r = run_cli("stats", "--model", str(tiny_dir), "--calib", f"file:{text_file}", "--nsamples", "4",
                "--seqlen", "16", "--seed", "1", "--site", "gate", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    payload = json.loads(r.stdout.strip().splitlines()[-1])
    assert payload["tokens"] == 64 and payload["layers"] == 2 and payload["cached"] is False
    frame = pd.read_parquet(out)
    assert list(frame.columns[:7]) == ["layer", "neuron", "tf", "idf", "n_active", "tokens", "w_norm"]
    assert (frame["tokens"] == 64).all() and len(frame) == 2 * 48
    # the table is the same numbers the library computes
    from neuronrank.store import load_stats, get_entry

    stats = load_stats(get_entry(payload["cache_key"]))
    assert frame["tf"].to_numpy() == pytest.approx(stats.tf.ravel(), rel=1e-12)
    assert "layer" in r.stdout and "TF min" in r.stdout
    r2 = run_cli("stats", "--model", str(tiny_dir), "--calib", f"file:{text_file}", "--nsamples", "4",
                 "--seqlen", "16", "--seed", "1", "--json")
    assert json.loads(r2.stdout.strip().splitlines()[-1])["cached"] is True


@pytest.mark.parametrize("args,needle", [
    (["stats", "--model", "/no/such/model"], "model path not found"),
    (["stats", "--nsamples", "0"], "nsamples must be at least 1"),
    (["stats", "--seqlen", "1"], "seqlen must be between 2"),
    (["stats", "--site", "resid"], "invalid choice"),
    (["stats", "--calib", "bogus"], "unknown text source"),
    (["stats", "--out", "x.csv"], "--out must end in .parquet"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_error_line_and_exit_2(args, needle, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0]


def test_bad_input_through_the_real_entry_point(text_file):
    r = run_cli("stats", "--model", "/no/such/model", "--calib", f"file:{text_file}")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: model path not found: /no/such/model"]
