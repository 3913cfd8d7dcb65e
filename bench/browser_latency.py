"""The Exponents explorer in a real browser (Debian Chromium + Playwright): slider → score histogram, measured inside
the page.

For each statistics entry — the embedded model's (computed if missing: 16 × 256 news windows), and synthetic ones
of Llama-7B's MLP shape (32 × 11,008 = 352,256 neurons) and of 80 × 28,672 (2,293,760 neurons; random numbers:
only the shape matters for speed) — it opens /exponents?entry=KEY in a fresh browser context and reports:

- entry → browser: page open (navigation start) → the entry's arrays unpacked in the page, and → the first
  histogram drawn (Plotly.js is evaluated once per tab in between);
- key press → histogram: performance.now() at the keydown on the focused α slider (the event's own time stamp) →
  the first animation frame in which the all-neurons histogram's trace data differs (a requestAnimationFrame poll,
  shadow roots walked to find the Plotly chart); median, min, max of `--moves` presses (α alternating right/left,
  starting from α = 1.3 so every press pays exp·ln);
- updates per second while dragging: (a) `--drag-reps` Playwright mouse drags across the α slider for `--drag`
  seconds each — each CDP mouse move waits for the page's acknowledgement, so a busy page slows the driver itself;
  the all-neurons histogram's rate (the goal) and the layer histogram's (redrawn every second update while a pointer
  drags) are printed; (b) one new slider value per animation frame, generated in the page (what a hand at the
  display's frame rate produces): histogram updates per second;
- script runs: how many Streamlit reruns the presses and the drag caused (Python hears the view once a hand stops).

Goals (DESIGN.md): key press → histogram ≤ 50 ms at 352k, ≤ 150 ms at 2.3M; ≥ 20 updates/s while dragging at 352k
(both the mouse drag and the in-page stream); the entry in the browser ≤ 2 s at 352k.

Usage: python bench/browser_latency.py [--moves 15] [--shapes embedded,32x11008,80x28672] [--drag 3] [--drag-reps 3] [--opens 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _appserver import CHROMIUM, CHROMIUM_ARGS, IDLE, running_app

REPO = Path(__file__).resolve().parent.parent

# the all-neurons score histogram, found through shadow roots (the explorer lives in one)
FIND_HIST = """() => { let out = null; const walk = (r) => { for (const e of r.querySelectorAll('*')) {
    if (!out && e.classList && e.classList.contains('js-plotly-plot') && e.data && e.data[0] && e.data[0].type === 'bar'
        && String(e.layout && e.layout.title && e.layout.title.text).startsWith('Scores, all')) out = e;
    if (e.shadowRoot) walk(e.shadowRoot); } }; walk(document); return out; }"""
FIND_LAYER_HIST = FIND_HIST.replace("startsWith('Scores, all')", "startsWith('Scores, layer')")
PROBE = """() => {
  const gd = (%s)(), gl = (%s)();
  const M = window.__bench = { key: null, lat: [], updates: [], lupdates: [], runs: 0, inputs: 0 };
  let lastY = gd.data[0].y, lastL = gl.data[0].y;
  document.addEventListener('keydown', (e) => { M.key = e.timeStamp; }, true);
  document.addEventListener('input', () => { M.inputs++; }, true);
  const app = document.querySelector('[data-testid=stApp]');
  // a finished script run: the attribute left 'running' (records keep the old value: none is missed)
  new MutationObserver((recs) => { for (const r of recs) if (r.oldValue === 'running') M.runs++; })
    .observe(app, { attributes: true, attributeOldValue: true, attributeFilter: ['data-test-script-state'] });
  const poll = () => {
    const y = gd.data[0].y;
    if (y !== lastY) {
      lastY = y; const now = performance.now(); M.updates.push(now);
      if (M.key !== null) { M.lat.push(now - M.key); M.key = null; }
    }
    if (gl.data[0].y !== lastL) { lastL = gl.data[0].y; M.lupdates.push(performance.now()); }
    requestAnimationFrame(poll);
  };
  requestAnimationFrame(poll);
  return true; }""" % (FIND_HIST, FIND_LAYER_HIST)
STREAM = """(secs) => new Promise(done => {
  let s = null; const walk = (r) => { for (const e of r.querySelectorAll('*')) {
      if (!s && e.matches('input[type=range][data-k=alpha]')) s = e; if (e.shadowRoot) walk(e.shadowRoot); } };
  walk(document);
  const M = window.__bench, n0 = M.updates.length, t0 = performance.now();
  let v = 1.3, d = 0.1, frames = 0;
  const step = () => {
    if (performance.now() - t0 > secs * 1000) { done({ frames, updates: M.updates.length - n0, ms: performance.now() - t0 }); return; }
    if (!(0.15 < v + d && v + d < 2.85)) d = -d;
    v = Math.round((v + d) * 10) / 10; s.value = String(v);
    s.dispatchEvent(new Event('input', { bubbles: true })); frames++;
    requestAnimationFrame(step); };
  requestAnimationFrame(step); })"""
READY = "() => window.__nr && window.__nr.explorer && window.__nr.explorer.result && window.__nr.explorer.result.overlap"


def synthetic_entry(layers: int, width: int, hidden: int = 4096, k: int = 2) -> str:
    """A cache entry of random statistics of the given shape (saved like a real one)."""
    from neuronrank.analysis.neuron_stats import NeuronStats
    from neuronrank.data import stats_cache as store

    params = {"model": f"synthetic-{layers}x{width}", "calib": "random", "nsamples": 16, "seqlen": 256,
              "seed": 0, "site": "gate"}
    key = store.stats_key(params)
    if any(e.key == key for e in store.list_entries()):
        return key
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
        top_window=rng.integers(0, 16, (layers, width, k)).astype(np.int32),
        top_pos=rng.integers(0, 256, (layers, width, k)).astype(np.int32),
        windows=rng.integers(0, 32000, (16, 256)).astype(np.int32), meta={"site": "gate"})
    return store.save_stats(params, stats).key


def embedded_entry() -> str:
    from neuronrank.config.requests import StatsRequest
    from neuronrank.engine.statistics import get_stats

    return get_stats(StatsRequest(nsamples=16, seqlen=256)).entry.key


def q(xs, unit="ms", fmt=".0f") -> str:
    return (f"median {statistics.median(xs):{fmt}} {unit} (min {min(xs):{fmt}}, max {max(xs):{fmt}}, n={len(xs)})"
            if xs else "no data")


def open_page(browser, url: str, key: str):
    """A fresh context (a new session: the arrays and Plotly travel) -> (page, seconds to arrays, to first drawing)."""
    ctx = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = ctx.new_page()
    page.goto(f"{url}/exponents?entry={key}")
    page.wait_for_function(READY, timeout=300_000, polling=20)
    arrived, drawn = page.evaluate("(key) => [window.__nr.entries.get(key).arrivedAt, window.__nr.explorer.firstDrawn]",
                                   key)
    page.wait_for_selector(IDLE, timeout=300_000)
    return ctx, page, arrived / 1000, drawn / 1000, arrived


def measure(browser, url: str, key: str, args) -> dict:
    opens = []
    for _ in range(max(1, args.opens)):  # the first after a server start also loads the entry on the server
        ctx, page, arrived, drawn, _ = open_page(browser, url, key)
        plotly_ms = page.evaluate("window.__nr.plotlyEvalMs")
        opens.append((arrived, drawn, plotly_ms))
        if len(opens) < args.opens:
            ctx.close()
    for i, (a, d, p) in enumerate(opens):
        print(f"  open {i + 1}: arrays in the browser {a:.2f} s after navigation start, first histogram {d:.2f} s "
              f"(Plotly.js evaluated in {p or 0:.0f} ms)")
    page.wait_for_timeout(500)
    page.evaluate(PROBE)
    slider = page.get_by_role("slider", name="α")
    slider.focus()
    for _ in range(3):  # α = 1.3: every press below pays exp·ln (α = 1 is a plain copy)
        page.keyboard.press("ArrowRight")
        page.wait_for_timeout(200)
    page.wait_for_timeout(800)
    page.wait_for_selector(IDLE)
    page.evaluate("window.__bench.lat = []; window.__bench.runs = 0")
    for i in range(args.moves):
        page.keyboard.press("ArrowRight" if i % 2 == 0 else "ArrowLeft")
        page.wait_for_timeout(int(args.pause * 1000))
    page.wait_for_timeout(800)
    page.wait_for_selector(IDLE)
    lat = page.evaluate("window.__bench.lat")
    key_runs = page.evaluate("window.__bench.runs")
    timing = page.evaluate(f"window.__nr.explorer.log.slice(-{args.moves})")
    print(f"  key press -> histogram holds new data: {q(lat)}; {key_runs} script runs for {args.moves} presses "
          f"{args.pause:g} s apart")
    if timing:
        parts = {k: statistics.median(t[k] for t in timing) for k in ("scores", "hist", "cut", "draw", "tables",
                                                                      "draw_rest")}
        print("    in the page, per update (median ms): " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()))
    # (a) mouse drags: down on the thumb, moves that each land on a new slider value
    box = slider.bounding_box()
    y = box["y"] + box["height"] / 2
    x_of = lambda v: box["x"] + 8 + (box["width"] - 16) * v / 3.0  # noqa: E731
    mouse_rates, layer_rates, drag_runs = [], [], []
    for _ in range(max(1, args.drag_reps)):
        page.evaluate("window.__bench.runs = 0")
        cur = float(slider.input_value())
        page.mouse.move(x_of(cur), y)
        page.mouse.down()
        t_start = page.evaluate("performance.now()")
        end = time.time() + args.drag
        v, d = cur, 0.1
        while time.time() < end:  # sweeps between α = 0.2 and 2.8, one mouse event per slider value
            target = 2.8 if d > 0 else 0.2
            page.mouse.move(x_of(target), y, steps=max(1, round(abs(target - v) / 0.1)))
            v, d = target, -d
        t_end = page.evaluate("performance.now()")
        page.mouse.up()
        secs = (t_end - t_start) / 1000
        mouse_rates.append(len([u for u in page.evaluate("window.__bench.updates") if t_start < u <= t_end]) / secs)
        layer_rates.append(len([u for u in page.evaluate("window.__bench.lupdates") if t_start < u <= t_end]) / secs)
        page.wait_for_timeout(1200)
        page.wait_for_selector(IDLE)
        drag_runs.append(page.evaluate("window.__bench.runs"))
    mouse_rate = statistics.median(mouse_rates)
    print(f"  mouse drag {args.drag:g} s × {len(mouse_rates)}: all-neurons histogram {q(mouse_rates, '/s', '.1f')}; "
          f"layer histogram (every second update while dragging) {q(layer_rates, '/s', '.1f')}; "
          f"script runs after each drag {drag_runs}")
    # (b) one new value per animation frame, in the page
    res = page.evaluate(STREAM, args.drag)
    stream_rate = res["updates"] / res["ms"] * 1000
    print(f"  one value per animation frame {args.drag:g} s: {res['frames']} values, {res['updates']} histogram "
          f"updates -> {stream_rate:.1f} updates/s")
    page.wait_for_timeout(800)
    page.context.close()
    return {"lat": lat, "mouse": mouse_rate, "mouse_all": mouse_rates, "stream": stream_rate,
            "arrived": [o[0] for o in opens]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--moves", type=int, default=15, help="key presses timed per entry (>= 10 for the goals)")
    ap.add_argument("--pause", type=float, default=0.35, help="seconds between key presses")
    ap.add_argument("--drag", type=float, default=3.0, help="seconds of each drag measurement")
    ap.add_argument("--drag-reps", type=int, default=3, help="mouse drags per entry (median, min, max)")
    ap.add_argument("--opens", type=int, default=2, help="fresh-context page opens per entry (entry -> browser)")
    ap.add_argument("--shapes", default="embedded,32x11008,80x28672")
    args = ap.parse_args()
    cache = os.environ.get("NEURONRANK_CACHE") or tempfile.mkdtemp(prefix="nr-bench-")
    os.environ["NEURONRANK_CACHE"] = cache
    models_dir = Path(cache) / "models"
    if not models_dir.exists():  # reuse the repo's converted embedded model
        (REPO / "cache" / "models").mkdir(parents=True, exist_ok=True)
        models_dir.symlink_to(REPO / "cache" / "models")
    entries = {}
    for shape in args.shapes.split(","):
        if shape == "embedded":
            entries["embedded 30×1,536"] = embedded_entry()
        else:
            layers, width = (int(x) for x in shape.split("x"))
            entries[f"{layers}×{width:,} ({layers * width:,} neurons)"] = synthetic_entry(layers, width)
    from playwright.sync_api import sync_playwright

    results = {}
    with running_app(dict(os.environ)) as (url, _), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for name, key in entries.items():
            print(f"{name}: entry {key}")
            results[name] = measure(browser, url, key, args)
        browser.close()
    print(f"uptime: {os.popen('uptime').read().strip()}")
    for name, r in results.items():
        tag = "352k" if "352,256" in name else "2.3M" if "2,293,760" in name else "embedded"
        goal = {"352k": "<=50", "2.3M": "<=150"}.get(tag, "")
        lat = r["lat"]
        print(f"RESULT browser_key_to_histogram_ms_{tag} {statistics.median(lat):.0f} {goal} "
              f"(min {min(lat):.0f}, max {max(lat):.0f}, n={len(lat)})".replace("  ", " "))
        if tag == "352k":
            print(f"RESULT browser_drag_updates_per_s_352k {r['stream']:.1f} >=20")
            m = r["mouse_all"]
            print(f"RESULT browser_mouse_drag_updates_per_s_352k {r['mouse']:.1f} >=20 (min {min(m):.1f}, "
                  f"max {max(m):.1f}, n={len(m)})")
            print(f"RESULT browser_entry_arrays_s_352k_first_open {r['arrived'][0]:.2f} <=2")
            if len(r["arrived"]) > 1:
                print(f"RESULT browser_entry_arrays_s_352k_later_open {statistics.median(r['arrived'][1:]):.2f} <=2")


if __name__ == "__main__":
    main()
