"""A statistics run started from the app (queued, a dispatcher and a worker process) against the same run
from the CLI (goal: the app's within 10 % of the CLI's wall time).

Both compute the same entry size with different seeds (so neither finds the other's result in the
cache), alternating, after one warm-up run that converts the model and tokenizes the text. The app's
time is the run store's created -> finished (what a user waits after clicking *Compute statistics*);
the CLI's is the command's wall time. Prints the median of each and their ratio.
Usage: python bench/app_vs_cli_stats.py [--nsamples 16 --seqlen 256 --reps 2]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nsamples", type=int, default=16)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="nr-app-vs-cli-"))
    (REPO / "cache" / "models").mkdir(parents=True, exist_ok=True)
    (cache / "models").symlink_to(REPO / "cache" / "models")  # the converted embedded model, shared
    os.environ["NEURONRANK_CACHE"] = str(cache)

    from neuronrank.queue import jobs
    from neuronrank.config.requests import StatsRequest
    from neuronrank.runs.store import RunStore

    def cli(seed: int) -> float:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "neuronrank", "stats", "--nsamples", str(args.nsamples),
                        "--seqlen", str(args.seqlen), "--seed", str(seed)], check=True, cwd=REPO,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - t

    def app(seed: int) -> float:
        store = RunStore()
        rid = jobs.submit("stats", StatsRequest(nsamples=args.nsamples, seqlen=args.seqlen, seed=seed))
        while (run := store.get(rid))["status"] in ("queued", "running"):
            time.sleep(0.1)
        assert run["status"] == "done", run["error"]
        return run["finished"] - run["created"]

    cli(10_000)  # warm-up: GGUF conversion (once) and the token cache
    t_cli, t_app = [], []
    for i in range(args.reps):
        t_cli.append(cli(100 + i))
        t_app.append(app(200 + i))
    c, a = statistics.median(t_cli), statistics.median(t_app)
    print(f"statistics {args.nsamples} × {args.seqlen}: CLI median {c:.1f} s {['%.1f' % x for x in t_cli]}, "
          f"app (queued worker) median {a:.1f} s {['%.1f' % x for x in t_app]}")
    print(f"RESULT app_vs_cli_stats_ratio {a / c:.3f} <=1.10")


if __name__ == "__main__":
    main()
