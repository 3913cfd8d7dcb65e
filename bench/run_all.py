"""Run every benchmark, each in its own process, one after another, and print one table of the
ratios and goals they report (their `RESULT name value goal` lines). Numbers are measured in this one
run: absolute times drift on shared machines, ratios much less.

Usage: python bench/run_all.py [--quick]
"""

import argparse
import datetime as dt
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

BENCHES = [
    ("stats_overhead.py", ["--sizes", "2x128,8x256,32x256", "--reps", "3"], ["--sizes", "2x128,16x256", "--reps", "2"]),
    ("app_latency.py", ["--no-rest"], ["--no-rest", "--reps", "5"]),
    ("ppl_throughput.py", ["--windows", "8", "--reps", "3"], ["--windows", "4", "--reps", "2"]),
    ("stats_memory.py", ["--sizes", "8,32,128"], ["--sizes", "8,32"]),
    ("wanda_sequential.py", ["--nsamples", "32"], ["--nsamples", "16", "--eval-windows", "4"]),
    ("browser_latency.py", ["--moves", "15"], ["--moves", "5"]),
    ("idle_cpu.py", ["--seconds", "20"], ["--seconds", "5"]),
    ("app_vs_cli_stats.py", ["--reps", "2"], ["--reps", "1", "--nsamples", "4"]),
    ("structured_speed.py", ["--reps", "5"], ["--reps", "2", "--new", "16", "--prefill", "128"]),
    ("outcome_map.py", ["--reps", "5"], ["--reps", "2", "--sizes", "10,100"]),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sizes")
    ap.add_argument("--only", help="comma-separated bench file names")
    args = ap.parse_args()
    results = []
    for name, full, quick in BENCHES:
        if args.only and name not in args.only.split(","):
            continue
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, str(HERE / name), *(quick if args.quick else full)],
                              capture_output=True, text=True)
        print(f"== {name} ({time.perf_counter() - t:.0f} s)\n{proc.stdout}", flush=True)
        if proc.returncode:
            print(proc.stderr[-2000:])
            results.append((name, "FAILED", "", ""))
        for line in proc.stdout.splitlines():
            if line.startswith("RESULT "):
                _, metric, value, *goal = line.split(maxsplit=3)
                results.append((name, metric, value, goal[0] if goal else ""))
            elif line.startswith("speed-up "):
                results.append((name, "wanda_layerwise_over_onepass_time", line.split()[1].rstrip("x;"), ">=2"))
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"\nBenchmarks {dt.date.today()} on {device}, torch {torch.__version__}")
    print("| bench | metric | value | goal |\n|---|---|---|---|")
    for r in results:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
