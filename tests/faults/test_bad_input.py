"""Bad input: one clear line (the CLI's `error:` and exit code 2, the app's message), checked before
anything heavy loads; odd values are refused or announced."""


import pytest
import torch

from neuronrank import UserError
from neuronrank.config.requests import StatsRequest
from neuronrank.engine.statistics import get_stats
from neuronrank.runs.store import RunStore
from tests.faults.conftest import REPO, one_error_line


# --- bad input through the CLI -----------------------------------------------------------------


@pytest.mark.parametrize("argv,needle", [
    (["stats", "--model", "nonexistent-org/nonexistent-model"], "cannot load model"),
    (["stats", "--seqlen", "100000"], "seqlen must be between 2 and 4096"),
    (["prune", "--weight-exp", "nan"], "alpha must be between"),
    (["prune", "--idf-exp", "1e9"], "gamma must be between"),
    (["prune", "--sparsity_type", "4:8", "--sparsity_ratio", "0.25"], "must be 0.5"),
    (["stats", "--nsamples", "-3"], "nsamples must be at least 1"),
])
def test_cli_bad_values(capsys, monkeypatch, argv, needle):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    one_error_line(capsys, argv, needle)


def test_bad_model_files(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    one_error_line(capsys, ["stats", "--model", str(tmp_path / "empty")], "not a model (no config.json)")
    trunc = tmp_path / "t.gguf"
    trunc.write_bytes(b"GGUF\x03\x00\x00\x00")
    one_error_line(capsys, ["stats", "--model", str(trunc)], "cannot read GGUF")


def test_gpt2_style_model_is_refused(capsys, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model("gpt2", n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path / "gpt2")
    one_error_line(capsys, ["stats", "--model", str(tmp_path / "gpt2")], "has no gated MLP; supported: Llama")


def test_seqlen_longer_than_context(capsys, tiny_dir, text_file):
    one_error_line(capsys, ["stats", "--model", str(tiny_dir), "--calib", f"file:{text_file}", "--seqlen", "300"],
                   "longer than the model's context (256 tokens)")


def test_pruning_last_beyond_layers(capsys, tiny_dir, text_file):
    one_error_line(capsys, ["prune", "--model", str(tiny_dir), "--calib", f"file:{text_file}", "--eval",
                            f"file:{text_file}", "--pruning_last", "5", "--eval-seqlen", "16"],
                   "exceeds the model's 2 layers")


def test_unknown_run_id():
    from neuronrank.queue import jobs
    from neuronrank.runs.store import RunStore

    with pytest.raises(UserError, match="no run with id 123456"):
        RunStore().get(123456)
    with pytest.raises(UserError, match="no run with id 123456"):
        jobs.cancel(123456)


# --- found in review ---------------------------------------------------------------------------


def test_diverged_perplexity_is_inf_and_json_null(tiny, tiny_windows, capsys):
    from neuronrank.analysis.numbers import finite as _finite
    from neuronrank.cli import _emit
    from neuronrank.evaluation.perplexity import perplexity

    with torch.no_grad():
        tiny.lm_head.weight.mul_(1e5)
    assert perplexity(tiny, tiny_windows).ppl == float("inf")
    assert _finite({"a": float("inf"), "b": [float("nan"), 1.5]}) == {"a": None, "b": [None, 1.5]}

    class Args:
        json = True

    _emit(Args, {"pruned_ppl": float("inf")})
    assert capsys.readouterr().out.strip() == '{"pruned_ppl": null}'


def test_file_system_errors_are_one_line(capsys, tiny_dir, text_file, tmp_path):
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"text": "caf\xe9"}\n')
    one_error_line(capsys, ["stats", "--model", str(tiny_dir), "--calib", f"file:{bad}"], "not UTF-8")
    one_error_line(capsys, ["stats", "--model", "~no_such_user_xyz/model"], "model path not found")
    one_error_line(capsys, ["stats", "--model", str(tiny_dir), "--calib", f"file:{text_file}", "--nsamples", "2",
                            "--seqlen", "16", "--out", "/proc/nope/x.parquet"], "error:")


@pytest.mark.parametrize("flag,target,needle", [
    ("--save", "/proc/neuronrank-x", "cannot write in /proc"),
    ("--save", "FILE", "exists and is not a folder"),
    ("--save_model", "/proc/neuronrank-x", "cannot write in /proc"),
    ("--save_model", "FILE", "exists and is not a saved model"),
    ("--save_model", "NONEMPTY", "exists and is not a saved model"),
    ("--save-masks", "/proc/neuronrank-x/m.safetensors", "cannot write in /proc"),
    ("--save-masks", "DIR", "is a folder, expected a file name"),
])
def test_prune_output_targets_are_checked_before_the_model_loads(capsys, tiny_dir, text_file, tmp_path,
                                                                  no_model_load, flag, target, needle):
    if target == "FILE":
        target = tmp_path / "taken.txt"
        target.write_text("x")
    elif target == "DIR":
        target = tmp_path / "m.safetensors"
        target.mkdir()
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
    from neuronrank.engine import statistics as pipeline

    monkeypatch.setattr(pipeline, "LARGE_TOKENS", 100)
    with caplog.at_level("WARNING"):
        get_stats(StatsRequest(model=str(tiny_dir), calib=f"file:{text_file}", nsamples=40, seqlen=16, seed=8))
    said = [r.getMessage() for r in caplog.records]
    assert any("40 windows x 16 tokens = 640 tokens" in m for m in said), said
    assert any("windows repeat" in m for m in said), said


# --- RIA, OWL, FLAP and compensation: every new flag refused where it does not apply -------------------


@pytest.mark.parametrize("argv,needle", [
    (["prune", "--layer-sparsity", "owl", "--sparsity_type", "structured", "--sparsity_ratio", "0.2"],
     "--layer-sparsity owl gives each layer its own unstructured sparsity: not defined for structured"),
    (["prune", "--layer-sparsity", "owl", "--sparsity_type", "2:4"], "not defined for 2:4 sparsity"),
    (["prune", "--owl-lambda", "0.1"], "--owl-lambda applies with --layer-sparsity owl only"),
    (["prune", "--owl-threshold", "7"], "--owl-threshold applies with --layer-sparsity owl only"),
    (["prune", "--layer-sparsity", "owl", "--owl-threshold", "0"], "owl_threshold must be above 0"),
    (["prune", "--layer-sparsity", "owl", "--owl-lambda", "-0.1"], "owl_lambda must be between 0 and 1"),
    (["prune", "--layer-sparsity", "owl", "--owl-lambda", "nan"], "owl_lambda must be between 0 and 1"),
    (["prune", "--layer-sparsity", "owls"], "invalid choice: 'owls'"),
    (["prune", "--compensate", "mean"], "--compensate adds the pruned neurons' mean output back as a bias: "
                                        "structured sparsity only (got unstructured)"),
    (["prune", "--compensate", "mean", "--sparsity_type", "4:8"], "structured sparsity only (got 4:8)"),
    (["prune", "--prune_method", "flap"], "flap prunes structured sparsity only"),
    (["prune", "--prune_method", "ria", "--sparsity_type", "structured"], "ria prunes unstructured or N:M"),
    (["prune", "--fluctuation", "variance", "--sparsity_type", "structured"], "--fluctuation applies to flap only"),
    (["prune", "--prune_method", "flap", "--sparsity_type", "structured", "--nsamples", "1"],
     "flap's fluctuation needs at least 2 calibration windows"),
    (["prune", "--prune_method", "flap", "--sparsity_type", "structured", "--calibration", "sequential"],
     "prunes unstructured or N:M sparsity only"),
    (["search", "--owl-lambda-range", "0,0.2", "--trials", "1"], "--owl-lambda-range searches OWL's λ: it needs "
                                                                  "--layer-sparsity owl"),
    (["search", "--layer-sparsity", "owl", "--owl-lambda-range", "0.2,0.1"], "write LO,HI with 0 <= LO <= HI <= 1"),
    (["search", "--layer-sparsity", "owl", "--owl-lambda", "0.1", "--owl-lambda-range", "0,0.2"],
     "not both"),
    (["sweep", "--compensate", "mean", "--ratios", "0.2"], "structured sparsity only (got unstructured)"),
])
def test_baseline_flags_refused_where_they_do_not_apply(capsys, monkeypatch, argv, needle):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    one_error_line(capsys, argv, needle)
