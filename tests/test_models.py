"""Model specs, the embedded model, and the one-off GGUF conversion."""

import multiprocessing as mp
import os

import pytest
import torch

from neuronrank import UserError
from neuronrank.engine import models


def test_spec_resolution_errors(tmp_path):
    with pytest.raises(UserError, match="model file not found"):
        models.resolve(str(tmp_path / "x.gguf"))
    with pytest.raises(UserError, match="not a model"):
        models.resolve(str(tmp_path))  # a directory without config.json
    (tmp_path / "weights.bin").write_bytes(b"123")
    with pytest.raises(UserError, match="not a model"):
        models.resolve(str(tmp_path / "weights.bin"))
    with pytest.raises(UserError, match="model path not found"):
        models.resolve("./no/such/dir")
    assert models.resolve("smollm2-135m").kind == "alias"
    assert models.resolve("someorg/somemodel").kind == "hub"


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


@pytest.mark.slow
def test_embedded_model_is_smollm2_and_knows_paris():
    model, tok = models.load("smollm2-135m")
    cfg = model.config
    assert type(model).__name__ == "LlamaForCausalLM"
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size) == (30, 576, 1536, 49152)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads) == (9, 3)
    assert abs(sum(p.numel() for p in model.parameters()) - 134.5e6) < 0.1e6
    assert next(model.parameters()).dtype == torch.float32
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=6, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:])
    blocks = models.mlp_blocks(model)
    assert len(blocks) == 30 and blocks[0].width == 1536 and set(blocks[0].attn) == set("qkvo")


def _convert(cache, barrier, q):
    os.environ["NEURONRANK_CACHE"] = cache
    barrier.wait()
    q.put(str(models.converted_gguf(models.embedded_gguf())))


@pytest.mark.slow
def test_two_processes_converting_at_once_agree(tmp_path):
    ctx = mp.get_context("spawn")
    barrier, q = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_convert, args=(str(tmp_path), barrier, q)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0, 0]
    a, b = q.get(), q.get()
    assert a == b
    folder = tmp_path / "models"
    assert [p.name for p in folder.iterdir() if p.is_dir()] == [os.path.basename(a)]  # no temp leftovers
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(a)
    assert m.config.num_hidden_layers == 30


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
