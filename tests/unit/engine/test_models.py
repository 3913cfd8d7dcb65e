"""Loading a model: a local folder, an unknown hub id, dtypes and devices, a corrupt GGUF, device_map."""

import os

import pytest
import torch

from neuronrank import UserError
from neuronrank.engine import models


def test_unknown_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="cannot load model"):
        models.load("nonexistent-org/nonexistent-model")


def test_local_directory_loads_with_tokenizer(tiny_dir):
    model, tok = models.load(str(tiny_dir))
    assert not model.training and next(model.parameters()).dtype == torch.float32
    assert len(models.mlp_blocks(model)) == 2
    assert len(tok("the quick brown fox")["input_ids"]) > 0


def test_dtype_and_device_resolution():
    assert models.resolve_dtype("auto", "cpu") == torch.float32
    assert models.resolve_dtype("auto", "cuda") == torch.bfloat16
    assert models.resolve_dtype("bf16", "cpu") == torch.bfloat16
    with pytest.raises(UserError, match="unknown dtype"):
        models.resolve_dtype("int3")
    if not torch.cuda.is_available():
        assert models.resolve_device("auto").type == "cpu"
        with pytest.raises(UserError, match="no CUDA device"):
            models.resolve_device("cuda")


def test_corrupt_gguf_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURONRANK_CACHE", str(tmp_path / "c"))
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(2000))
    with pytest.raises(UserError, match="cannot read GGUF"):
        models.load(str(bad))
    assert not list((tmp_path / "c" / "models").glob("broken*/config.json"))  # nothing half-written


def test_device_map_auto_loads_and_everything_runs_on_it(tiny_dir, text_file, tiny_windows):
    """device_map="auto" (accelerate) places the layers itself; statistics, perplexity and pruning follow
    each layer's device. Here every layer lands on the CPU; on GPUs the same code spans devices."""
    import numpy as np

    from neuronrank.evaluation.perplexity import perplexity
    from neuronrank.prune import prune, sparsity_report
    from neuronrank.config.requests import PruneRequest
    from neuronrank.engine.collect import batched, collect

    mapped, _ = models.load(str(tiny_dir), device_map="auto")
    plain, _ = models.load(str(tiny_dir))
    ids = tiny_windows % 100
    a, b = collect(mapped, batched(ids, 3)), collect(plain, batched(ids, 3))
    np.testing.assert_allclose(a.tf, b.tf, rtol=1e-6)
    assert perplexity(mapped, ids).ppl == pytest.approx(perplexity(plain, ids).ppl, rel=1e-5)
    prune(mapped, PruneRequest(prune_method="wanda", sparsity_ratio=0.5), a)
    assert sparsity_report(mapped)["mlp"] == pytest.approx(0.5)
