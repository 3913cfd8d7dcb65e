"""Throughput on a randomly initialised model of Llama-2-7B's shape (config only, nothing downloaded):
plain decoder forward, the statistics pass, and perplexity evaluation, in tokens/s and as a fraction
of the 2·params FLOP floor at the chip's dense bf16 peak (default 790 TFLOP/s, an H200).

Also (issue 14's table): a torch.profiler top-kernel table of the statistics pass (--profile), and with
--prune the pruning figures at 128 x 2048 calibration: our statistics + Wanda 50 % / 2:4 prune, magnitude
50 % over all linears, the neuronrank_old 50 % prune step, GPU memory beyond the model; printed next
to upstream Wanda's figures measured on the same H200 (MEASURED.md, 2026-11-28: prune_wanda 17.4 s,
2:4 32.6 s, prune_magnitude 0.20 s, 6.06 GiB): the GPU machine has no upstream code to rerun.
--sequential adds our layer-wise Wanda baseline (bench/wanda_sequential.py) at the same shape;
--compiled the statistics pass with the torch.compile'd kernels (Triton on a GPU) and its compile time.

For a GPU session: `python bench/gpu_llama7b.py --profile --prune --compiled`. `--shape tiny --device cpu` is a
smoke run anywhere. Only torch and transformers are needed (no pandas, gguf, datasets).
"""

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the GPU machine has no install of the package

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
    from neuronrank.evaluation import perplexity as evaluate
    from neuronrank.engine.models import decoder_body
    from neuronrank.engine.collect import batched, collect

    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="llama2-7b", choices=list(SHAPES))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=790.0)
    ap.add_argument("--profile", action="store_true", help="top kernels of plain vs statistics pass")
    ap.add_argument("--prune", action="store_true", help="the pruning rows of issue 14's table")
    ap.add_argument("--calib", type=int, default=128, help="calibration windows for --prune")
    ap.add_argument("--sequential", action="store_true", help="layer-wise Wanda baseline (slow)")
    ap.add_argument("--compiled", action="store_true", help="also the statistics pass with the torch.compile'd "
                    "one-read kernels (NEURONRANK_COMPILE=1; Triton on a GPU), its compile time and ratio")
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
    print(f"RESULT gpu_stats_overhead_ratio {t_stats / t_plain:.3f} (goal <= 1.05)")
    print(f"RESULT gpu_ppl_vs_forward {t_plain / t_ppl:.3f} (lm_head included in ppl; goal >= 0.95)")
    print(f"RESULT gpu_stats_fraction_of_peak {floor_body / t_stats:.3f} (goal >= 0.55)")
    print(f"RESULT gpu_plain_fraction_of_peak {floor_body / t_plain:.3f}")
    if args.profile:
        profile_passes(model, windows, args, device, plain)
    if args.prune:
        prune_figures(model, args, device, seqlen, t_plain / tokens)
    if args.compiled:
        compiled_stats(model, windows, args, device, t_plain, floor_body)
    if args.sequential:
        sequential_baseline(model, args, device, seqlen)


UPSTREAM = {"wanda": 17.4, "2:4": 32.6, "magnitude": 0.20, "mem_gib": 6.06}  # MEASURED.md, H200, 7B shape


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def profile_passes(model, windows, args, device, plain) -> None:
    from torch.profiler import ProfilerActivity, profile

    from neuronrank.engine.collect import batched, collect

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    for label, fn in (("plain forward", plain), ("statistics pass", lambda: collect(model, batched(windows, args.batch)))):
        _sync(device)
        with profile(activities=acts) as p:
            fn()
            _sync(device)
        ev = p.key_averages()
        syncs = sum(e.count for e in ev if e.key == "cudaStreamSynchronize")
        launches = sum(e.count for e in ev if e.key == "cudaLaunchKernel")
        copies = sum(e.count for e in ev if e.key == "cudaMemcpyAsync")
        print(f"\n== profile: {label} ({len(windows)} x {windows.shape[1]} tokens): "
              f"cudaLaunchKernel {launches}, cudaStreamSynchronize {syncs}, cudaMemcpyAsync {copies}")
        print(ev.table(sort_by=sort, row_limit=18, max_name_column_width=60))


def prune_figures(model, args, device, seqlen, plain_s_per_token: float) -> None:
    """Issue 14's pruning rows. Times include everything after the model is on the device."""
    from neuronrank.prune import prune
    from neuronrank.config.requests import PruneRequest
    from neuronrank.engine.collect import batched, collect

    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(1)
    calib = torch.randint(0, vocab, (args.calib, seqlen), generator=g)
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())

    def timed_once(fn):
        _sync(device)
        t = time.perf_counter()
        out = fn()
        _sync(device)
        return time.perf_counter() - t, out

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t_stats, stats = timed_once(lambda: collect(model, batched(calib, args.batch)))
    t_forward = plain_s_per_token * calib.numel()  # the plain forward over these tokens, at the rate above
    print(f"\n== pruning, {args.calib} x {seqlen} calibration (batch {args.batch})")
    print(f"statistics pass                  {t_stats:8.2f} s  (a plain forward over the same tokens: "
          f"{t_forward:.2f} s; with free statistics and an instant prune, wanda's speed-up could reach at most "
          f"{UPSTREAM['wanda'] / t_forward:.2f}x, 2:4's {UPSTREAM['2:4'] / t_forward:.2f}x)")
    # prune steps modify the weights in place: timing only (random weights), each on the current model
    rows = []
    for label, spec, ref in (
            ("wanda 50% (row)", PruneRequest(prune_method="wanda", sparsity_ratio=0.5, group="row", targets="all"), "wanda"),
            ("wanda 2:4", PruneRequest(prune_method="wanda", sparsity_ratio=0.5, sparsity_type="2:4", targets="all"), "2:4")):
        t_prune, _ = timed_once(lambda: prune(model, spec, stats))
        total = t_stats + t_prune
        rows.append((label, t_prune, total, UPSTREAM[ref]))
        print(f"{label:32} prune {t_prune:6.3f} s  stats+prune {total:7.2f} s  upstream {UPSTREAM[ref]:5.1f} s  "
              f"speed-up {UPSTREAM[ref] / total:5.2f}x (goal >= 3)")
        print(f"RESULT gpu_{ref.replace(':', '_')}_speedup_vs_upstream {UPSTREAM[ref] / total:.2f} (goal >= 3)")
    if device.type == "cuda":
        extra = (torch.cuda.max_memory_allocated() - model_bytes) / 2**30
        print(f"memory beyond the model (stats + wanda prune): {extra:.2f} GiB  upstream {UPSTREAM['mem_gib']} GiB")
        print(f"RESULT gpu_wanda_memory_beyond_model_gib {extra:.2f} (upstream {UPSTREAM['mem_gib']})")
    for _ in range(2):  # the first call warms the sort kernels up
        t_mag, _ = timed_once(lambda: prune(model, PruneRequest(prune_method="magnitude", sparsity_ratio=0.5, targets="all")))
    print(f"magnitude 50% all linears        {t_mag:8.3f} s  upstream {UPSTREAM['magnitude']:.2f} s")
    print(f"RESULT gpu_magnitude_prune_s {t_mag:.3f} (upstream {UPSTREAM['magnitude']}, goal <= upstream)")
    t_nr, _ = timed_once(lambda: prune(model, PruneRequest(prune_method="neuronrank_old", sparsity_ratio=0.5), stats))
    print(f"neuronrank_old 50% prune step    {t_nr:8.3f} s  (goal <= 0.2 s)")
    print(f"RESULT gpu_neuronrank_old_prune_step_s {t_nr:.3f} (goal <= 0.2)")


def compiled_stats(model, windows, args, device, t_plain, floor_body) -> None:
    """The statistics pass with the compiled kernels (one read of each activation and input); the
    default on a GPU is the eager kernels, and this says whether compiling would pay."""
    import os

    from neuronrank.engine.collect import batched, collect
    from neuronrank.engine.kernels import COMPILE_ENV

    old = os.environ.get(COMPILE_ENV)
    os.environ[COMPILE_ENV] = "1"
    try:
        run = lambda: collect(model, batched(windows, args.batch))  # noqa: E731
        _sync(device)
        t = time.perf_counter()
        run()  # compiles
        _sync(device)
        first = time.perf_counter() - t
        t_c = timed(run, device, args.reps)
    finally:
        if old is None:
            os.environ.pop(COMPILE_ENV, None)
        else:
            os.environ[COMPILE_ENV] = old
    print(f"\n== statistics pass, compiled kernels: {t_c:.3f} s warm, first pass {first:.1f} s "
          f"(compile ~{first - t_c:.1f} s once per process)")
    print(f"RESULT gpu_stats_overhead_ratio_compiled {t_c / t_plain:.3f} (goal <= 1.05)")
    print(f"RESULT gpu_stats_compiled_fraction_of_peak {floor_body / t_c:.3f} (goal >= 0.55)")


def sequential_baseline(model, args, device, seqlen) -> None:
    """Our re-implementation of Wanda's layer-wise pipeline (bench/wanda_sequential.py) at this shape."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from wanda_sequential import sequential

    g = torch.Generator().manual_seed(1)
    calib = torch.randint(0, model.config.vocab_size, (args.calib, seqlen), generator=g).to(device)
    ns = argparse.Namespace(ratio=0.5)
    _sync(device)
    t = time.perf_counter()
    sequential(model, calib, ns)
    _sync(device)
    t = time.perf_counter() - t
    print(f"\n== layer-wise Wanda (our re-implementation of upstream's loop), {args.calib} x {seqlen}: {t:.2f} s "
          f"(upstream prune_wanda {UPSTREAM['wanda']} s)")
    print(f"RESULT gpu_wanda_sequential_s {t:.2f}")


if __name__ == "__main__":
    main()
