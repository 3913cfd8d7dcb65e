"""Stats pass vs a plain decoder forward over the same tokens, on the embedded model.

Both run in this process, interleaved, several repetitions; prints the median ratio and the spread of
the per-repetition ratios (plain and stats of one repetition run back to back, so machine noise
mostly cancels). Goal (issue 14): <= 1.05. Usage: python bench/stats_overhead.py [--nsamples 16 --seqlen 256 --reps 3 --site gate]
"""

import argparse
import statistics
import time

import torch

from neuronrank import corpora, models
from neuronrank.stats import batched, collect


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=models.DEFAULT_MODEL)
    ap.add_argument("--nsamples", type=int, default=16)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--site", default="gate")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default). With 1, the "
                    "process CPU-time ratio is robust to other load on a shared machine")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tok = models.load(args.model, dtype=args.dtype)
    ids = corpora.token_stream(tok, corpora.load_corpus("news"))
    windows = corpora.calibration_windows(ids, args.nsamples, args.seqlen, seed=0)
    batches = batched(windows, args.batch_size)
    body = models.decoder_body(model)
    device = next(model.parameters()).device

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    @torch.inference_mode()
    def plain():
        for b in batches:
            body(input_ids=b.to(device), use_cache=False)

    def hooked():
        collect(model, batches, site=args.site)

    plain(), hooked()  # warm-up
    base, ours, cpu_base, cpu_ours = [], [], [], []
    for _ in range(args.reps):
        for fn, out, cpu in ((plain, base, cpu_base), (hooked, ours, cpu_ours)):
            sync()
            t, c = time.perf_counter(), time.process_time()
            fn()
            sync()
            out.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    tokens = windows.numel()
    b, o = statistics.median(base), statistics.median(ours)
    pairs = sorted(x / y for x, y in zip(ours, base))
    print(f"model={args.model} dtype={models.dtype_name(next(model.parameters()).dtype)} device={device} "
          f"site={args.site} tokens={tokens} reps={args.reps}")
    print(f"plain forward : {b:.3f} s  ({tokens / b:,.0f} tok/s)")
    print(f"stats pass    : {o:.3f} s  ({tokens / o:,.0f} tok/s)")
    print(f"ratio stats/plain = {o / b:.3f}  (goal <= 1.05); per repetition: median {statistics.median(pairs):.3f}, "
          f"min {pairs[0]:.3f}, max {pairs[-1]:.3f}")
    cpu_ratio = statistics.median(cpu_ours) / statistics.median(cpu_base)
    print(f"best of {args.reps}: plain {min(base):.3f} s, stats {min(ours):.3f} s, ratio {min(ours) / min(base):.3f} "
          "(noise only adds time: on a shared machine the best-of ratio is the steadier estimate)")
    print(f"process CPU time: plain {statistics.median(cpu_base):.3f} s, stats {statistics.median(cpu_ours):.3f} s, "
          f"ratio {cpu_ratio:.3f} (threads={torch.get_num_threads()}; with 1 thread, robust to other load)")
    print(f"RESULT stats_overhead_ratio {o / b:.3f} (goal <= 1.05)")
    print(f"RESULT stats_overhead_cpu_time_ratio {cpu_ratio:.3f}")


if __name__ == "__main__":
    main()
