"""Peak memory of a stats pass beyond the model's own, for growing nsamples: it must not grow.

Each size runs in its own subprocess (peak RSS, or peak CUDA allocation on a GPU, is per process).
Usage: python bench/stats_memory.py [--sizes 8,32,128 --seqlen 256]
"""

import argparse
import json
import os
import subprocess
import sys


def worker(nsamples: int, seqlen: int) -> None:
    import torch

    from _mem import PeakRSS
    from neuronrank import corpora
    from neuronrank.engine import models
    from neuronrank.engine.collect import batched, collect

    model, tok = models.load(models.DEFAULT_MODEL)
    ids = corpora.token_stream(tok, corpora.load_corpus("news"))
    windows = corpora.calibration_windows(ids, nsamples, seqlen, seed=0)
    cuda = next(model.parameters()).is_cuda
    # warm-up: a plain forward over the same windows first, so that what the backend and allocator
    # keep after forward passes (it creeps up over the first batches, hooks or not) counts as "the
    # model's own", and only what the statistics pass adds is measured
    body = models.decoder_body(model)
    with torch.inference_mode():
        for b in batched(windows, 8):
            body(input_ids=b.to(next(model.parameters()).device), use_cache=False)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
        collect(model, batched(windows, 8))
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        with PeakRSS() as mem:
            collect(model, batched(windows, 8))
        base, peak = mem.base, mem.peak
    print(json.dumps({"extra_mb": peak - base}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="8,32,128")
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--worker", type=int)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.seqlen)
    out = {}
    for n in map(int, args.sizes.split(",")):
        # large allocations through mmap, so freed activations leave the RSS at once and the number
        # measures live memory rather than what glibc's heap keeps cached
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
        r = subprocess.run([sys.executable, __file__, "--worker", str(n), "--seqlen", str(args.seqlen)],
                           capture_output=True, text=True, check=True, env=env)
        out[n] = json.loads(r.stdout.strip().splitlines()[-1])["extra_mb"]
        print(f"nsamples={n:>5} x {args.seqlen}: stats pass peak beyond a plain forward's = {out[n]:.1f} MB")
    sizes = sorted(out)
    print(f"RESULT stats_memory_growth_mb {out[sizes[-1]] - out[sizes[0]]:.1f} ~0 "
          f"({sizes[0]}->{sizes[-1]} samples)")


if __name__ == "__main__":
    main()
