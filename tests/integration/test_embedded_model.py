"""The embedded SmolLM2-135M (slow: the real model): what it is, and its one-off GGUF conversion by two
processes at once."""

import multiprocessing as mp
import os

import pytest
import torch

from neuronrank.data.specs import embedded_gguf
from neuronrank.engine import models


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
    assert len(blocks) == 30 and blocks[0].width == 1536 and set(blocks[0].attn_projections) == set("qkvo")


def _convert(cache, barrier, q):
    os.environ["NEURONRANK_CACHE"] = cache
    barrier.wait()
    q.put(str(models.converted_gguf(embedded_gguf())))


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
