"""What rescoring costs in the library (the Python side), without the browser.

`neuronrank.views.explorer.score_histograms`: rescoring every neuron through `neuronrank.analysis.scoring.score`
and binning the scores (overall and one layer, 100 bins). A slider move on the Exponents page no longer runs it —
the browser recomputes there (components/explorer_core.js; `bench/browser_latency.py` times that) — but it is the
reference the browser's numbers are tested against, and what the page's CSV downloads, the Roles page's scores
and a prune run's neuron ranking compute. This prints its median time for three model shapes:

    embedded SmolLM2-135M   30 × 1,536  =    46,080 neurons
    Llama-7B                32 × 11,008 =   352,256 neurons
    Llama-70B scale         80 × 28,672 = 2,293,760 neurons   (goal: ≤ 50 ms)

The statistics frames are synthetic: random values of plausible shape (log-normal |W| and TF, IDF from
random active counts, ~1 % dead neurons) — timing depends on the sizes and on the exponents (0 and 1
take fast paths, others call np.power), not on the values. `--entry KEY` adds a real cache entry.
The rest of the page (pruned fraction per layer, overlap with magnitude and Wanda, the 50 lowest
neurons) is timed too, for information. Numbers exclude Streamlit's own rerun and the browser's
drawing; the real-browser timing is a separate measurement.

Usage: python bench/app_latency.py [--reps 15] [--entry KEY] [--no-rest]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd

from neuronrank.views import explorer as views

SHAPES = {
    "embedded (SmolLM2-135M)": (30, 1536),
    "Llama-7B": (32, 11_008),
    "Llama-70B scale": (80, 28_672),
}
GOAL_MS = 50.0  # rescoring + histogram data for 2.3M neurons (DESIGN.md)


def synthetic_frame(n_layers: int, width: int, seed: int = 0, tokens: int = 16_384) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = n_layers * width
    n_active = rng.binomial(tokens, rng.beta(2, 2, n)).astype(np.int64)
    n_active[rng.random(n) < 0.01] = 0  # dead neurons: TF 0, score 0
    tf = rng.lognormal(-2.5, 0.8, n)
    tf[n_active == 0] = 0.0
    return pd.DataFrame({
        "layer": np.repeat(np.arange(n_layers, dtype=np.int32), width),
        "neuron": np.tile(np.arange(width, dtype=np.int32), n_layers),
        "tf": tf,
        "idf": np.log((tokens + 1) / (n_active + 1)) + 1,
        "n_active": n_active,
        "tokens": np.full(n, tokens),
        "w_norm": rng.lognormal(1.0, 0.25, n),
        "down_abs_mean": rng.lognormal(-4, 0.3, n),
        "x_norm_down": rng.lognormal(1, 0.5, n),
    })


def slider_moves(reps: int) -> list[tuple[float, float, float]]:
    """α sweeps as a dragged slider would, with β, γ off the fast paths (np.power for all three)."""
    alphas = np.round(np.linspace(0.5, 2.5, reps), 1)
    return [(float(a), 0.7, 1.5) for a in alphas]


def time_ms(fn, calls) -> list[float]:
    out = []
    for args in calls:
        t0 = time.perf_counter()
        fn(*args)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def bench(name: str, frame: pd.DataFrame, reps: int, rest: bool) -> dict:
    arrays = views.neuron_arrays(frame)
    layer = int(arrays["layer"][-1]) // 2
    moves = slider_moves(reps)
    row = {"shape": name, "neurons": len(frame)}
    views.score_histograms(arrays, 1.3, 0.7, 1.5, layer=layer)  # warm-up (page faults, caches)
    for log in (False, True):
        ms = time_ms(lambda a, b, g: views.score_histograms(arrays, a, b, g, layer=layer, log=log), moves)
        row["log x" if log else "linear x"] = statistics.median(ms)
    if rest:
        scores = views.score_histograms(arrays, 1.3, 0.7, 1.5)[0]
        calls = [(s,) for s in (0.3, 0.5, 0.7)]
        row["rest of page"] = statistics.median(time_ms(lambda s: (
            views.pruned_fraction(scores, arrays["layer"], s),
            views.ranking_overlap(scores, arrays, s, per_layer=True),
            views.lowest_neurons(arrays, scores)), calls))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=15, help="slider moves timed per shape and mode")
    ap.add_argument("--entry", help="also time a real cache entry (its key)")
    ap.add_argument("--no-rest", action="store_true", help="skip timing the rest of the page")
    args = ap.parse_args()

    rows = []
    for name, (n_layers, width) in SHAPES.items():
        rows.append(bench(f"{name} {n_layers}×{width:,}", synthetic_frame(n_layers, width), args.reps,
                          not args.no_rest))
    if args.entry:
        from neuronrank.data import stats_cache as store

        stats = store.load_stats(args.entry)
        rows.append(bench(f"entry {args.entry} {stats.n_layers}×{stats.width:,}", stats.to_frame(), args.reps,
                          not args.no_rest))

    table = pd.DataFrame(rows).set_index("shape")
    print("Median ms per slider move: rescoring (neuronrank.scoring.score) + 100-bin histograms "
          "(all neurons and one layer); synthetic random stats unless an entry is named.")
    with pd.option_context("display.float_format", "{:,.1f}".format, "display.width", 140):
        print(table.to_string())
    big = table.loc[[s for s in table.index if s.startswith("Llama-70B")][0]]
    worst = max(big["linear x"], big["log x"])
    print(f"\n2.3M neurons: {worst:.1f} ms (goal ≤ {GOAL_MS:.0f} ms) -> ratio {worst / GOAL_MS:.2f} "
          f"({'meets' if worst <= GOAL_MS else 'misses'} the goal)")
    sev = table.loc[[s for s in table.index if "7B" in s][0]]
    print(f"RESULT rescore_hist_ms_352k {max(sev['linear x'], sev['log x']):.1f} <=50")
    print(f"RESULT rescore_hist_ms_2.3M {worst:.1f} <=50")


if __name__ == "__main__":
    main()
