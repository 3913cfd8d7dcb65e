"""Slider-to-settled latency in a real browser (Debian Chromium + Playwright) on the Exponents page.

For each statistics entry — the embedded model's (computed if missing, small calibration) and a
synthetic one of Llama-7B size (32 × 11,008 neurons, random numbers: only the shape matters for speed)
— it opens the app, moves the α slider one step at a time and times from the key press until the
script run is finished and the histogram in the page holds new data. Prints the median per entry.
Goals: <= 250 ms at 7B size, <= 150 ms on the embedded model. Usage: python bench/browser_latency.py [--moves 15]
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _appserver import CHROMIUM, CHROMIUM_ARGS, IDLE, running_app

REPO = Path(__file__).resolve().parent.parent


def synthetic_entry(layers: int, width: int, hidden: int = 4096, k: int = 16) -> str:
    from neuronrank.data import stats_cache as store
    from neuronrank.analysis.neuron_stats import NeuronStats

    rng = np.random.default_rng(0)
    T = 131072
    n_active = rng.integers(0, T, (layers, width))
    sum_abs = rng.gamma(2.0, 0.05, (layers, width)) * T
    stats = NeuronStats(
        site="gate", sum_abs=sum_abs, sum_act=sum_abs * 0.2, sum_sq=sum_abs * 0.1, n_active=n_active,
        tokens=np.full(layers, T), w_norm=rng.gamma(5.0, 0.2, (layers, width)),
        up_norm=rng.gamma(5.0, 0.2, (layers, width)), down_norm=rng.gamma(5.0, 0.2, (layers, width)),
        down_abs_mean=rng.gamma(5.0, 0.01, (layers, width)),
        input_sq={"mlp_in": rng.random((layers, hidden)), "down_in": rng.random((layers, width))},
        top_vals=rng.random((layers, width, k)).astype(np.float32),
        top_window=rng.integers(0, 64, (layers, width, k)).astype(np.int32),
        top_pos=rng.integers(0, 2048, (layers, width, k)).astype(np.int32),
        windows=rng.integers(0, 32000, (64, 2048)).astype(np.int32), meta={"site": "gate"})
    params = {"model": f"synthetic-{layers}x{width}", "calib": "random", "nsamples": 64, "seqlen": 2048,
              "seed": 0, "site": "gate"}
    return store.save_stats(params, stats).key


def embedded_entry() -> str:
    from neuronrank.engine.statistics import get_stats
    from neuronrank.config.requests import StatsRequest

    return get_stats(StatsRequest(nsamples=16, seqlen=256)).entry.key



def hist_y(page):
    return page.evaluate("""() => { const p = Array.from(document.querySelectorAll('.js-plotly-plot'))
        .find(p => p.data && p.data.length && p.data[0].type === 'bar'); return p ? Array.from(p.data[0].y) : null; }""")


def measure(url: str, key: str, moves: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        idle = IDLE
        page.goto(f"{url}/exponents?entry={key}")  # the entry and the page from the URL, as a shared link
        page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length > 0", timeout=120_000)
        page.wait_for_selector(idle, timeout=120_000)
        page.wait_for_timeout(1000)
        slider = page.locator('input[type=range][aria-label="α (|W| exponent)"]')
        times, to_start = [], []
        for i in range(moves):
            before = hist_y(page)
            slider.focus()
            t = time.perf_counter()
            slider.press("ArrowRight" if i % 2 == 0 else "ArrowLeft")
            started = None
            while True:  # settled: the run finished and the chart holds new numbers
                page.wait_for_timeout(2)
                if started is None and not page.query_selector(idle):
                    started = time.perf_counter()  # the rerun reached the server
                if page.query_selector(idle) and hist_y(page) != before:
                    break
                if time.perf_counter() - t > 30:
                    raise RuntimeError("the chart did not update")
            times.append((time.perf_counter() - t) * 1000)
            if started is not None:
                to_start.append((started - t) * 1000)
            page.wait_for_timeout(200)
        browser.close()
    if to_start:
        print(f"  key press -> rerun running: median {statistics.median(to_start):.0f} ms "
              "(Streamlit's slider debounce and the round trip)")
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--moves", type=int, default=15)
    args = ap.parse_args()
    cache = os.environ.get("NEURONRANK_CACHE") or tempfile.mkdtemp(prefix="nr-bench-")
    os.environ["NEURONRANK_CACHE"] = cache
    models_dir = Path(cache) / "models"
    if not models_dir.exists():  # reuse the repo's converted embedded model
        (REPO / "cache" / "models").mkdir(parents=True, exist_ok=True)
        models_dir.symlink_to(REPO / "cache" / "models")
    entries = {"embedded 30×1,536": embedded_entry(), "Llama-7B 32×11,008": synthetic_entry(32, 11_008)}
    with running_app(dict(os.environ)) as (url, _):
        results = {}
        for name, key in entries.items():
            ms = measure(url, key, args.moves)
            results[name] = statistics.median(ms)
            print(f"{name}: median {results[name]:.0f} ms, min {min(ms):.0f}, max {max(ms):.0f} "
                  f"over {len(ms)} slider moves")
    print(f"RESULT browser_slider_ms_7B {results['Llama-7B 32×11,008']:.0f} <=250")
    print(f"RESULT browser_slider_ms_embedded {results['embedded 30×1,536']:.0f} <=150")


if __name__ == "__main__":
    main()
