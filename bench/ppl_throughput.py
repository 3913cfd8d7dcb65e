"""Perplexity evaluation throughput vs a raw forward (full model, logits) over the same windows.

Goal: eval/raw throughput >= 0.95. Usage: python bench/ppl_throughput.py [--seqlen 512 --windows 8 --reps 3]
"""

import argparse
import statistics
import time

import torch

from neuronrank import corpora
from neuronrank.evaluation import perplexity as evaluate
from neuronrank.engine import models


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=models.DEFAULT_MODEL)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dtype", default="auto")
    args = ap.parse_args()
    model, tok = models.load(args.model, dtype=args.dtype)
    device = next(model.parameters()).device
    ids = corpora.token_stream(tok, corpora.load_corpus("wiki"))
    win = corpora.evaluation_windows(ids, args.seqlen, args.windows)
    bs = evaluate.auto_batch_size(model, args.seqlen)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    @torch.inference_mode()
    def raw():
        for i in range(0, len(win), bs):
            model(input_ids=win[i:i + bs].to(device), use_cache=False)

    def ours():
        evaluate.perplexity(model, win, batch_size=bs)

    raw(), ours()
    t_raw, t_ours = [], []
    for _ in range(args.reps):
        for fn, out in ((raw, t_raw), (ours, t_ours)):
            sync()
            t = time.perf_counter()
            fn()
            sync()
            out.append(time.perf_counter() - t)
    r, o = statistics.median(t_raw), statistics.median(t_ours)
    n = win.numel()
    print(f"model={args.model} device={device} seqlen={args.seqlen} windows={len(win)} batch={bs} reps={args.reps}")
    print(f"raw forward (logits): {r:.3f} s ({n / r:,.0f} tok/s)")
    print(f"perplexity eval     : {o:.3f} s ({n / o:,.0f} tok/s)")
    print(f"RESULT ppl_throughput_ratio {r / o:.3f} >=0.95")


if __name__ == "__main__":
    main()
