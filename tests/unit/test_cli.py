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
                          timeout=timeout, env=env, cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_stats_command_writes_the_contract_table(tiny_dir, text_file, tmp_path, monkeypatch):
    # its own cache: another test may already have computed these statistics in the session's cache
    monkeypatch.setenv("NEURONRANK_CACHE", str(tmp_path / "cache"))
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
    from neuronrank.data.stats_cache import load_stats, get_entry

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


def tiny_prune_args(tiny_dir, text_file, *extra):
    return ("prune", "--model", str(tiny_dir), "--calib", f"file:{text_file}", "--eval", f"file:{text_file}",
            "--nsamples", "4", "--seqlen", "16", "--eval-seqlen", "16", "--eval-windows", "4", *extra)


def test_prune_command_with_original_flags(tiny_dir, text_file, tmp_path):
    r = run_cli(*tiny_prune_args(tiny_dir, text_file, "--prune_method", "neuronrank_old", "--sparsity_ratio", "0.5",
                                 "--sparsity_type", "unstructured", "--pruning_last", "1", "--weight-exp", "1.5",
                                 "--tf-exp", "1.0", "--idf-exp", "2.0", "--save", str(tmp_path / "out"), "--json"))
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["pruned_layers"] == [1]
    # last layer's MLP at 50 %, the other untouched: 25 % of all MLP weights
    assert res["sparsity"]["mlp"] == pytest.approx(0.25, abs=1e-3)
    assert res["protocol"] == {"source": f"file:{text_file}", "seqlen": 16, "windows": 4, "tokens": 60}
    assert res["pruned_ppl"] > 0 and res["dense_ppl"] > 0
    assert set(res["timings"]) >= {"load", "stats", "dense_eval", "prune", "eval"}
    assert "perplexity (" in r.stdout and "sparsity: MLP 0.25" in r.stdout
    saved = json.loads((tmp_path / "out" / "result.json").read_text())
    assert saved["result"]["pruned_ppl"] == res["pruned_ppl"]
    assert len(pd.read_csv(tmp_path / "out" / "sparsity.csv")) == 2 * 7
    from neuronrank.runs.store import RunStore

    run = RunStore().get(res["run_id"])
    assert run["status"] == "done" and run["origin"] == "cli" and run["params"]["alpha"] == 1.5


def test_prune_structured_save_model_is_smaller(tiny_dir, text_file, tmp_path):
    r = run_cli(*tiny_prune_args(tiny_dir, text_file, "--prune_method", "magnitude", "--sparsity_ratio", "0.25",
                                 "--sparsity_type", "structured", "--save_model", str(tmp_path / "m"), "--json"))
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["saved_model"]["format"] == "sliced: intermediate_size 36"
    r2 = run_cli("ppl", "--model", str(tmp_path / "m"), "--eval", f"file:{text_file}", "--eval-seqlen", "16",
                 "--eval-windows", "4", "--json")
    assert r2.returncode == 0, r2.stderr
    assert json.loads(r2.stdout.strip().splitlines()[-1])["ppl"] == pytest.approx(res["pruned_ppl"], rel=1e-5)


def test_sweep_runs_a_grid(tiny_dir, text_file):
    args = list(tiny_prune_args(tiny_dir, text_file, "--alphas", "0,1", "--gammas", "0,2", "--json"))
    args[0] = "sweep"
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(res["runs"]) == 4 and {(x["alpha"], x["gamma"]) for x in res["runs"]} == {(0, 0), (0, 2), (1, 0), (1, 2)}
    from neuronrank.runs.store import RunStore

    assert len(RunStore().list(group=res["group"])) == 4


@pytest.mark.parametrize("extra,needle", [
    (["--sparsity_ratio", "1.0"], "sparsity_ratio must be in [0, 1)"),
    (["--sparsity_ratio", "nan"], "sparsity_ratio must be in [0, 1)"),
    (["--sparsity_type", "2:4", "--sparsity_ratio", "0.3"], "must be 0.5"),
    (["--pruning_last", "0"], "pruning_last must be at least 1"),
    (["--weight-exp", "-1"], "alpha must be between 0 and 10"),
    (["--prune_method", "obc"], "invalid choice"),
])
def test_prune_bad_input(extra, needle, capsys):
    assert main(["prune", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0]


def tiny_ablate_args(tiny_dir, text_file, *extra):
    return ("ablate", "--model", str(tiny_dir), "--calib", f"file:{text_file}", "--eval", f"file:{text_file}",
            "--nsamples", "4", "--seqlen", "16", "--eval-seqlen", "16", "--eval-windows", "4", *extra)


def test_ablate_command_json_contract(tiny_dir, text_file):
    r = run_cli(*tiny_ablate_args(tiny_dir, text_file, "--classes", "moderate,important", "--quantile", "0.5",
                                  "--controls", "2", "--layers", "0", "--layers", "1", "--neurons", "1:7", "--json"))
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["eval"] == {"source": f"file:{text_file}", "seqlen": 16, "windows": 4, "tokens": 60}
    assert [(c["class"], c["layers"]) for c in res["classes"]] == [
        ("important", "0-0"), ("important", "1-1"), ("moderate", "0-0"), ("moderate", "1-1")]
    for c in res["classes"]:
        assert c["neurons"] == sum(c["per_layer"]) > 0 and len(c["random_ppl"]) == 2 and c["ppl"] > 0
    assert res["neurons"] == [{"layer": 1, "neuron": 7, "ppl": res["neurons"][0]["ppl"],
                               "delta_ppl": pytest.approx(res["neurons"][0]["ppl"] - res["dense_ppl"])}]
    assert res["evaluations"] == 4 * 3 + 1
    # the cost is said before the run, the measured estimate once the dense evaluation is known
    assert "ablate: up to 13 perplexity evaluations (2 classes x 2 layer bands x (1 + 2 random controls) + 1 " \
           "single neurons)" in r.stdout
    assert "ablate: 13 evaluations of 4 windows x 16 tokens, about" in r.stdout
    from neuronrank.runs.store import RunStore

    run = RunStore().get(res["run_id"])
    assert run["kind"] == "ablate" and run["params"]["layers"] == "0,1" and run["status"] == "done"


@pytest.mark.parametrize("extra,needle", [
    (["--layers", "5-2"], "layer band 5-2 is reversed"),
    (["--layers", "0-2"], "the model has layers 0-1"),
    (["--neurons", "0:48"], "layer 0 has neurons 0-47"),
    (["--neurons", "0-3"], "write LAYER:NEURON"),
    (["--quantile", "1.5"], "quantile must be between 0 and 1"),
    (["--tf-threshold", "0.1"], "--tf-threshold needs --idf-threshold"),
    (["--quantile", "0.5", "--tf-threshold", "0.1", "--idf-threshold", "2"], "either --quantile"),
    (["--classes", "vital"], "unknown role class 'vital'"),
    (["--classes", "none"], "nothing to ablate"),
    (["--controls", "-1"], "controls must be between 0 and 100"),
])
def test_ablate_bad_input(extra, needle, capsys, tiny_dir, text_file):
    assert main(list(tiny_ablate_args(tiny_dir, text_file, *extra))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err
