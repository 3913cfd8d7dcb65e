"""Throughput on a randomly initialised model of Llama-2-7B's shape (config only, nothing downloaded):
plain decoder forward, the statistics pass, and perplexity evaluation, in tokens/s and as a fraction
of the 2·params FLOP floor at the chip's dense bf16 peak (default 790 TFLOP/s, an H200).

For a GPU session: `python bench/gpu_llama7b.py`. `--shape tiny --device cpu` is a smoke run anywhere.
"""

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo, for `python bench/x.py`

import argparse
import statistics
import time

import torch

SHAPES = {
    "llama2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096),
    "tiny": dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4, vocab_size=512, max_position_embeddings=512),
}


def build(shape: str, device: str, dtype: torch.dtype):
    """Random weights (the model's own init), built directly on the device in the target dtype."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(**SHAPES[shape])
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return model.eval()


def timed(fn, device, reps):
    fn()
    out = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main() -> None:
    from neuronrank import evaluate
    from neuronrank.models import decoder_body
    from neuronrank.stats import batched, collect

    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="llama2-7b", choices=list(SHAPES))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=790.0)
    args = ap.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build(args.shape, args.device, dtype)
    params = sum(p.numel() for p in model.parameters())
    non_emb = params - model.model.embed_tokens.weight.numel()
    seqlen = min(args.seqlen, SHAPES[args.shape]["max_position_embeddings"])
    g = torch.Generator().manual_seed(0)
    windows = torch.randint(0, SHAPES[args.shape]["vocab_size"], (args.batch * args.batches, seqlen), generator=g)
    tokens = windows.numel()
    body = decoder_body(model)

    @torch.inference_mode()
    def plain():
        for b in batched(windows, args.batch):
            body(input_ids=b.to(device), use_cache=False)

    t_plain = timed(plain, device, args.reps)
    t_stats = timed(lambda: collect(model, batched(windows, args.batch)), device, args.reps)
    t_ppl = timed(lambda: evaluate.perplexity(model, windows, batch_size=args.batch), device, args.reps)
    # decoder body: 2 FLOPs per non-embedding parameter per token (lm_head included for ppl)
    floor_body = 2 * (non_emb - model.lm_head.weight.numel()) * tokens / (args.peak_tflops * 1e12)
    floor_full = 2 * non_emb * tokens / (args.peak_tflops * 1e12)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"{args.shape} ({params / 1e9:.2f}B params) on {name}, {dtype}, {tokens:,} tokens "
          f"({args.batch} x {seqlen} per batch), median of {args.reps}")
    print(f"{'pass':16} {'tok/s':>10} {'x floor time':>13}")
    for label, t, floor in (("plain forward", t_plain, floor_body), ("stats pass", t_stats, floor_body),
                            ("perplexity", t_ppl, floor_full)):
        print(f"{label:16} {tokens / t:>10,.0f} {t / floor:>13.2f}")
    print(f"RESULT gpu_stats_overhead_ratio {t_stats / t_plain:.3f} <=1.10")
    print(f"RESULT gpu_ppl_vs_forward {t_plain / t_ppl:.3f} (lm_head included in ppl)")
    print(f"RESULT gpu_stats_fraction_of_peak {floor_body / t_stats:.3f} ")


if __name__ == "__main__":
    main()
