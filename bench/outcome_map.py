"""The outcome map's costs: the Gaussian-process fit in Python for N measured points (done once per set of points),
and, in Debian Chromium, what one slider input costs the map — the posterior's mean and variance at the sliders'
point (gpPredict) and the whole follow() (estimate, its text, the markers on both projections and the band on the
baselines' chart moved; DOM only, no Plotly call).

Points are synthetic (a smooth log-ppl surface plus noise over [0, 3]³): only N matters for speed. Each figure is the
median (min–max) of `--reps` repetitions; the browser figures are per input, over `--inputs` inputs at random
exponents. No app server: the map's own module (components/common.js + outcome_map.js) and Plotly.js (the plotly
package's) are loaded into a blank page.

Usage: python bench/outcome_map.py [--sizes 10,50,100,200,400] [--reps 5] [--inputs 400]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _appserver import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

from neuronrank.views import outcomes as views  # noqa: E402


def points(n: int, seed: int = 0):
    import pandas as pd

    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 3, (n, 3))
    logp = 3 + 0.4 * (X[:, 0] - 1.2) ** 2 + 0.2 * (X[:, 1] - 2) ** 2 + 0.3 * X[:, 2] + rng.normal(0, 0.05, n)
    return pd.DataFrame({"alpha": X[:, 0], "beta": X[:, 1], "gamma": X[:, 2], "ppl": np.exp(logp)})


def fmt(xs) -> str:
    return f"{statistics.median(xs):.3g} ({min(xs):.3g}–{max(xs):.3g})"


PAGE_JS = """
window.__om = { OutcomeMap, gpPredict };
"""

RUN = """([data, inputs, reps]) => {
  const { OutcomeMap, gpPredict } = window.__om;
  const host = document.getElementById('host');
  host.innerHTML = '';
  const el = document.createElement('div'); host.appendChild(el);
  let view = { alpha: 1, beta: 1, gamma: 1, sparsity: data.sparsity };
  const map = new OutcomeMap(el, () => view);
  map.setData(data, false, () => {}, 'bench');
  let seed = 1; const rnd = () => { seed = (seed * 16807) % 2147483647; return 3 * seed / 2147483647; };
  const pred = [], follow = [];
  for (let r = 0; r < reps; r++) {
    const P = data.posterior;
    let t0 = performance.now();
    for (let i = 0; i < inputs; i++) gpPredict(P, rnd(), rnd(), rnd());
    pred.push((performance.now() - t0) / inputs);
    t0 = performance.now();
    for (let i = 0; i < inputs; i++) { view = { alpha: rnd(), beta: rnd(), gamma: rnd(), sparsity: data.sparsity }; map.follow(); }
    follow.push((performance.now() - t0) / inputs);
  }
  return { pred, follow };
}"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10,50,100,200,400")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--inputs", type=int, default=400)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    fits = {}
    views.fit(points(views.MIN_POINTS))  # scikit-learn's import, outside the timings
    for n in sizes:
        pts = points(n)
        ts = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            post = views.fit(pts)
            ts.append(time.perf_counter() - t0)
        fits[n] = (ts, post)
        print(f"fit N={n}: {fmt([t * 1000 for t in ts])} ms  kernel {post.gp.kernel_}")

    from playwright.sync_api import sync_playwright

    from components import browser

    module = browser.module("outcome_map.js") + PAGE_JS
    plotly = Path(__import__("plotly").__file__).parent / "package_data" / "plotly.min.js"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = b.new_page(viewport={"width": 1400, "height": 900})
        page.set_content('<div id="host" style="width:1300px"></div>')
        page.add_script_tag(path=str(plotly))
        page.add_script_tag(content=module, type="module")
        page.wait_for_function("() => window.__om && window.Plotly")
        for n in sizes:
            _, post = fits[n]
            pts = points(n)
            out = views.Outcomes(pts.assign(source="run", ref=[f"run {i}" for i in range(n)], run=None, estimate=None),
                                 {"wanda": {"ppl": 28.0, "runs": 1}}, 12.9)
            data = {"sparsity": 0.5, "type": "unstructured", "protocol": "wiki, seqlen 512, 16 windows",
                    "min_points": views.MIN_POINTS, "points": views.browser_points(out), "posterior": post.browser()}
            data = json.loads(json.dumps(data))
            r = page.evaluate(RUN, [data, args.inputs, args.reps])
            print(f"browser N={n}: gpPredict {fmt([x * 1000 for x in r['pred']])} µs per input; "
                  f"follow() {fmt([x * 1000 for x in r['follow']])} µs per input")
            print(f"RESULT outcome_map_fit_ms_N{n} {statistics.median(fits[n][0]) * 1000:.1f}")
            print(f"RESULT outcome_map_input_us_N{n} {statistics.median(r['follow']) * 1000:.0f}")
        b.close()


if __name__ == "__main__":
    main()
