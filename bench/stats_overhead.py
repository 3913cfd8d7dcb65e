"""Stats pass vs a plain decoder forward over the same tokens, on the embedded model, at several run sizes.

For each run size (windows x seqlen, batches of --batch-size windows) both run in this process,
interleaved, several repetitions; prints the median ratio and the spread of the per-repetition ratios
(plain and stats of one repetition run back to back, in an order that rotates each repetition, so machine
noise mostly cancels), for each statistics kernel asked for:

    default   what a pass uses when nothing is set: the native one-read kernels on a CPU (built once per
              machine, engine/native.py), the eager kernels where they cannot be built
    eager     the eager torch kernels (NEURONRANK_NATIVE=0 NEURONRANK_COMPILE=0)
    compiled  the torch.compile'd one-pass kernels (NEURONRANK_COMPILE=1); its first pass compiles

Goal (issue 24): <= 1.05 for the default path at every run size.
Usage: python bench/stats_overhead.py [--sizes 2x128,8x256,64x256 --reps 8 --kernel default,eager,compiled]
"""

import argparse
import contextlib
import os
import statistics
import time

import torch

from neuronrank import corpora
from neuronrank.engine import models, native
from neuronrank.engine.collect import batched, collect
from neuronrank.engine.kernels import COMPILE_ENV

KERNEL_ENV = {"default": {}, "eager": {native.NATIVE_ENV: "0", COMPILE_ENV: "0"}, "compiled": {COMPILE_ENV: "1"}}


@contextlib.contextmanager
def env(values: dict):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=models.DEFAULT_MODEL)
    ap.add_argument("--sizes", default="2x128,8x256,64x256",
                    help="run sizes, windows x seqlen, comma-separated (2x128: a test-sized run; 64x256: the app's "
                         "and the CLI's default)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--site", default="gate")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--kernel", default="default",
                    help="comma-separated: default, eager, compiled (each interleaved with the plain forward)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    kernels = [k.strip() for k in args.kernel.split(",") if k.strip()]
    bad = [k for k in kernels if k not in KERNEL_ENV]
    if bad:
        ap.error(f"unknown kernel {bad[0]!r}; choose from {', '.join(KERNEL_ENV)}")
    sizes = []
    for s in args.sizes.split(","):
        w, _, l = s.strip().partition("x")
        sizes.append((int(w), int(l)))

    model, tok = models.load(args.model, dtype=args.dtype)
    ids = corpora.token_stream(tok, corpora.load_corpus("news"))
    body = models.decoder_body(model)
    device = next(model.parameters()).device
    t = time.perf_counter()
    lib = native.library() if device.type == "cpu" else None
    print(f"model={args.model} dtype={models.dtype_name(next(model.parameters()).dtype)} device={device} "
          f"site={args.site} reps={args.reps} threads={torch.get_num_threads()} batch={args.batch_size} "
          f"load={os.getloadavg()[0]:.2f}; native kernels: {'loaded' if lib else 'unavailable'} "
          f"({time.perf_counter() - t:.3f} s)")

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for W, L in sizes:
        batches = batched(corpora.calibration_windows(ids, W, L, seed=0), args.batch_size)

        @torch.inference_mode()
        def plain():
            for b in batches:
                body(input_ids=b.to(device), use_cache=False)

        def hooked(kernel):
            def run():
                with env(KERNEL_ENV[kernel]):
                    collect(model, batches, site=args.site)
            return run

        plain()
        warm = {}
        for k in kernels:  # warm-up; the compiled kernel's first call compiles it (timed here, once)
            t = time.perf_counter()
            hooked(k)()
            warm[k] = time.perf_counter() - t
        base, ours = [], {k: [] for k in kernels}
        runs = [("plain", plain), *((k, hooked(k)) for k in kernels)]
        for r in range(args.reps):
            # the order rotates each repetition: whatever the first pass after another pays (page faults
            # of freshly mapped memory, caches) falls on each kind equally often
            for name, fn in runs[r % len(runs):] + runs[:r % len(runs)]:
                sync()
                t = time.perf_counter()
                fn()
                sync()
                (base if name == "plain" else ours[name]).append(time.perf_counter() - t)
        b = statistics.median(base)
        tokens = W * L
        print(f"{W} x {L} ({tokens} tokens, {len(batches)} batch(es)): plain forward {b:.3f} s")
        for k in kernels:
            pairs = sorted(x / y for x, y in zip(ours[k], base))
            print(f"  stats pass, {k} kernel: {statistics.median(ours[k]):.3f} s; ratio stats/plain per repetition: "
                  f"median {statistics.median(pairs):.3f}, min {pairs[0]:.3f}, max {pairs[-1]:.3f}")
            if k == "compiled":
                print(f"  its first pass took {warm[k]:.1f} s: the compile costs about "
                      f"{warm[k] - statistics.median(ours[k]):.1f} s once per process")
            print(f"RESULT stats_overhead_ratio_{k}_{W}x{L} {statistics.median(pairs):.3f} "
                  f"(min {pairs[0]:.3f}, max {pairs[-1]:.3f}; goal <= 1.05)")
    print(f"load at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
