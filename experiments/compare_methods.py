"""The first scientific result: dense vs pruned perplexity for every method on the embedded model.

Runs neuronrank_old (α=β=γ=1), magnitude, wanda and random at 50 % unstructured (MLP only) and 20 %
structured, with the same calibration windows and evaluation protocol, and prints a markdown table
with the wall time of each stage. Usage: python experiments/compare_methods.py [--eval-windows 16 ...]
"""

import argparse
import time

from neuronrank.config.requests import PruneRequest
from neuronrank.queue.kinds import prune_job


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--nsamples", type=int, default=64)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--eval-seqlen", type=int, default=512)
    ap.add_argument("--eval-windows", type=int, default=16)
    ap.add_argument("--configs", default="unstructured:0.5,structured:0.2")
    args = ap.parse_args()
    rows = []
    for cfg in args.configs.split(","):
        kind, ratio = cfg.split(":")
        for method in ("neuronrank_old", "magnitude", "wanda", "random"):
            req = PruneRequest(model=args.model, prune_method=method, sparsity_ratio=float(ratio),
                               sparsity_type=kind, nsamples=args.nsamples, seqlen=args.seqlen,
                               eval_seqlen=args.eval_seqlen, eval_windows=args.eval_windows)
            t = time.perf_counter()
            res = prune_job(req, lambda *a, **k: None)
            res["wall"] = time.perf_counter() - t
            rows.append((kind, ratio, method, res))
            print(f"done {kind} {ratio} {method}: {res['pruned_ppl']:.3f}", flush=True)
    p = rows[0][3]["protocol"]
    print(f"\nmodel {args.model}; calibration news, {args.nsamples} x {args.seqlen} tokens, seed 0, site gate; "
          f"eval {p['source']}, seqlen {p['seqlen']}, {p['windows']} windows ({p['tokens']:,} predicted tokens); "
          f"dense ppl {rows[0][3]['dense_ppl']:.3f}\n")
    print("| sparsity | method | pruned ppl | MLP sparsity | stats s | dense eval s | prune s | eval s | wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind, ratio, method, r in rows:
        t = r["timings"]
        print(f"| {float(ratio):.0%} {kind} | {method} | {r['pruned_ppl']:.3f} | {r['sparsity']['mlp']:.4f} | "
              f"{t.get('stats', 0):.1f} | {t['dense_eval']:.1f} | {t['prune']:.1f} | {t['eval']:.1f} | {r['wall']:.1f} |")


if __name__ == "__main__":
    main()
