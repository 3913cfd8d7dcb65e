"""Stats pass vs a plain decoder forward over the same tokens, on the embedded model.

Both run in this process, interleaved, several repetitions; prints the median ratio and the spread of
the per-repetition ratios (plain and stats of one repetition run back to back, in an order that
rotates each repetition, so machine noise mostly cancels), for the eager kernels and the
torch.compile'd one-pass kernel. Goal (issue 14): <= 1.05.
Usage: python bench/stats_overhead.py [--nsamples 16 --seqlen 256 --reps 5 --site gate --kernel both]
"""

import argparse
import os
import statistics
import time

import torch

from neuronrank import corpora
from neuronrank.engine import models
from neuronrank.engine.collect import batched, collect
from neuronrank.engine.kernels import COMPILE_ENV


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=models.DEFAULT_MODEL)
    ap.add_argument("--nsamples", type=int, default=16)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--site", default="gate")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--kernel", default="both", choices=("eager", "compiled", "both"),
                    help="the statistics kernel: eager (the default for small runs), compiled (torch.compile, "
                         "the default for large CPU runs), or both, interleaved in one run")
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

    def hooked(kernel):
        def run():
            os.environ[COMPILE_ENV] = "1" if kernel == "compiled" else "0"
            collect(model, batches, site=args.site)
        return run

    kernels = ["eager", "compiled"] if args.kernel == "both" else [args.kernel]
    plain()
    warm = {}
    for k in kernels:  # warm-up; the compiled kernel's first call compiles it (timed here, once)
        t = time.perf_counter()
        hooked(k)()
        warm[k] = time.perf_counter() - t
    base, cpu_base = [], []
    ours = {k: [] for k in kernels}
    cpu_ours = {k: [] for k in kernels}
    runs = [("plain", plain), *((k, hooked(k)) for k in kernels)]
    for r in range(args.reps):
        # the order rotates each repetition: whatever the first pass after another pays (page faults
        # of freshly mapped memory, caches) falls on each kind equally often
        for name, fn in runs[r % len(runs):] + runs[:r % len(runs)]:
            sync()
            t, c = time.perf_counter(), time.process_time()
            fn()
            sync()
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            (base if name == "plain" else ours[name]).append(wall)
            (cpu_base if name == "plain" else cpu_ours[name]).append(cpu)
    tokens = windows.numel()
    b = statistics.median(base)
    print(f"model={args.model} dtype={models.dtype_name(next(model.parameters()).dtype)} device={device} "
          f"site={args.site} tokens={tokens} reps={args.reps} threads={torch.get_num_threads()}")
    print(f"plain forward : {b:.3f} s  ({tokens / b:,.0f} tok/s)")
    for k in kernels:
        o = statistics.median(ours[k])
        pairs = sorted(x / y for x, y in zip(ours[k], base))
        cpu_ratio = statistics.median(cpu_ours[k]) / statistics.median(cpu_base)
        print(f"stats pass, {k} kernel: {o:.3f} s ({tokens / o:,.0f} tok/s); ratio stats/plain per repetition: "
              f"median {statistics.median(pairs):.3f}, min {pairs[0]:.3f}, max {pairs[-1]:.3f}; "
              f"process CPU time ratio {cpu_ratio:.3f}")
        if k == "compiled":
            print(f"  its first pass took {warm[k]:.1f} s vs {statistics.median(ours[k]):.1f} s warm: the compile "
                  f"costs about {warm[k] - statistics.median(ours[k]):.1f} s once per process (NEURONRANK_COMPILE=auto "
                  "compiles only for runs of >= 5e9 activation values)")
        print(f"RESULT stats_overhead_ratio_{k} {statistics.median(pairs):.3f} (goal <= 1.05)")


if __name__ == "__main__":
    main()
