"""Peak memory of a stats pass beyond the model's own, for growing nsamples: it must not grow.

Each size runs in its own subprocess (peak RSS, or peak CUDA allocation on a GPU, is per process).
Usage: python bench/stats_memory.py [--sizes 8,32,128 --seqlen 256]
"""

import argparse
import json
import resource
import subprocess
import sys
import threading
import time


def worker(nsamples: int, seqlen: int) -> None:
    import torch

    from neuronrank import corpora, models
    from neuronrank.stats import batched, collect

    model, tok = models.load(models.DEFAULT_MODEL)
    ids = corpora.token_stream(tok, corpora.load_corpus("news"))
    windows = corpora.calibration_windows(ids, nsamples, seqlen, seed=0)
    cuda = next(model.parameters()).is_cuda
    # warm-up on one batch so allocator pools and one-off buffers count as "the model's own"
    collect(model, batched(windows[:8], 8))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
        collect(model, batched(windows, 8))
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        # ru_maxrss would include the model load's own peak: sample the current RSS instead
        base = _rss()
        peak, stop = [base], threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], _rss())
                time.sleep(0.005)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        collect(model, batched(windows, 8))
        stop.set()
        th.join()
        peak = peak[0]
    print(json.dumps({"extra_mb": peak - base}))


def _rss() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


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
        r = subprocess.run([sys.executable, __file__, "--worker", str(n), "--seqlen", str(args.seqlen)],
                           capture_output=True, text=True, check=True)
        out[n] = json.loads(r.stdout.strip().splitlines()[-1])["extra_mb"]
        print(f"nsamples={n:>5} x {args.seqlen}: peak beyond model + one batch = {out[n]:.1f} MB")
    sizes = sorted(out)
    print(f"RESULT stats_memory_growth_mb {out[sizes[-1]] - out[sizes[0]]:.1f} ~0 "
          f"({sizes[0]}->{sizes[-1]} samples)")


if __name__ == "__main__":
    main()
