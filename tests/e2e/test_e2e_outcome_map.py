"""The outcome map beside the Exponents sliders, in Debian Chromium on the embedded model: moving a slider moves
the estimate and the marker while the hand moves (the browser's mean and std equal sklearn's predict at each
point), and "Measure this point" queues a real prune run whose measured perplexity then appears beside the
estimate the map showed when it was queued. A screenshot is saved to test-artifacts/e2e_outcome_map.png."""

import json
import math
import os
import re
from dataclasses import asdict

import numpy as np
import pytest

from bench._appserver import CHROMIUM, running_app
from tests.e2e.test_e2e_browser import ARTIFACTS

pytestmark = [pytest.mark.slow, pytest.mark.e2e,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")]

IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
READY = ("() => window.__nr && window.__nr.explorer && window.__nr.explorer.result && window.__nr.outcomes && "
         "window.__nr.outcomes.estimate")
ESTIMATE = "() => window.__nr.outcomes.estimate"
# the map's elements live in the explorer's shadow root: walk shadow roots
IN_SHADOW = """(sel) => { let out = null; const walk = (r) => { if (out) return; const f = r.querySelector(sel);
    if (f) { out = f; return; } for (const e of r.querySelectorAll('*')) if (e.shadowRoot) walk(e.shadowRoot); };
    walk(document); return out; }"""
TEXT = f"(sel) => {{ const e = ({IN_SHADOW})(sel); return e ? e.textContent : null; }}"
CURSOR = f"""() => {{ const c = ({IN_SHADOW})('[data-om-cursor="gamma"]');
    return c && !c.hidden ? {{alpha: Number(c.dataset.alpha), y: Number(c.dataset.y), t: c.style.transform}} : null; }}"""
PROTO = (32, 2)  # evaluation seqlen and windows: the smallest protocol worth a number, so a prune takes seconds


@pytest.fixture(scope="module")
def served(isolated_cache, text_file):
    from neuronrank.config.requests import PruneRequest, StatsRequest
    from neuronrank.engine.statistics import get_stats
    from neuronrank.runs.store import RunStore
    from neuronrank.views.entries import stats_params_of

    res = get_stats(StatsRequest(model="smollm2-135m", calib=f"file:{text_file}", nsamples=4, seqlen=32, seed=0,
                                 batch_size=4))
    entry = res.entry
    calib = stats_params_of(entry.params)
    store = RunStore()
    proto = {"source": f"file:{text_file}", "seqlen": PROTO[0], "windows": PROTO[1], "tokens": PROTO[1] * (PROTO[0] - 1)}
    rng = np.random.default_rng(1)
    # earlier measurements on this entry at 50 % unstructured (a smooth surface): what the estimate rests on
    for a, b, g in rng.uniform(0, 3, (8, 3)).round(2):
        req = PruneRequest(**calib, prune_method="neuronrank_old", sparsity_ratio=0.5, alpha=float(a), beta=float(b),
                           gamma=float(g), eval=proto["source"], eval_seqlen=PROTO[0], eval_windows=PROTO[1])
        rid = store.create("prune", asdict(req.normalized()), status="running")
        ppl = float(np.exp(4 + 0.4 * (a - 1.5) ** 2 + 0.2 * b + 0.1 * (g - 1) ** 2))
        store.finish(rid, "done", {"pruned_ppl": ppl, "dense_ppl": 40.0, "protocol": proto, "stats_key": entry.key})
    with running_app(dict(os.environ, NEURONRANK_CACHE=str(isolated_cache))) as (url, _):
        yield url, entry, calib, proto


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1440, "height": 1100})
    p = ctx.new_page()
    errors = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    yield p
    ctx.close()
    assert errors == []


def settled(page, timeout=60_000):
    page.wait_for_selector('[data-testid="stMain"] h1', timeout=timeout)
    page.wait_for_selector(IDLE, timeout=timeout)
    page.wait_for_timeout(400)
    page.wait_for_selector(IDLE, timeout=timeout)


def library_posterior(entry, calib, proto):
    from neuronrank.runs.store import RunStore
    from neuronrank.views import outcomes as views

    out = views.gather(RunStore().list(kind="prune", limit=10_000), [], entry.key, calib, 0.5, "unstructured",
                       views.Protocol(proto["source"], proto["seqlen"], proto["windows"]))
    return views.fit(out.points), out


def test_moving_a_slider_moves_the_estimate_and_the_marker(served, page):
    url, entry, calib, proto = served
    post, out = library_posterior(entry, calib, proto)
    assert post is not None and post.n == len(out.points) >= 8
    page.goto(f"{url}/exponents?entry={entry.key}&alpha=1&beta=1&gamma=1&sparsity=0.5")
    page.wait_for_function(READY, timeout=90_000)
    settled(page)
    seen = []
    for name, presses, want in (("α", 3, (1.3, 1.0, 1.0)), ("γ", 5, (1.3, 1.0, 1.5)), ("β", 8, (1.3, 1.8, 1.5))):
        before = page.evaluate(CURSOR)
        slider = page.get_by_role("slider", name=name)
        slider.focus()
        for _ in range(presses):
            slider.press("ArrowRight")
        page.wait_for_function(f"() => {{ const e = window.__nr.outcomes.estimate; return e && "
                               f"Math.abs(e.alpha - {want[0]}) < 1e-9 && Math.abs(e.beta - {want[1]}) < 1e-9 && "
                               f"Math.abs(e.gamma - {want[2]}) < 1e-9; }}", timeout=10_000)
        got = page.evaluate(ESTIMATE)
        mean, std = post.predict(*want)
        assert got["log_mean"] == pytest.approx(mean[0], rel=1e-9)
        assert got["log_std"] == pytest.approx(std[0], rel=1e-9)
        assert got["points"] == post.n
        text = page.evaluate(TEXT, "[data-om-est]")
        assert text.startswith(f"Estimate at α = {want[0]:g}, β = {want[1]:g}, γ = {want[2]:g}: ppl ≈ ")
        assert f"from {post.n} measured points" in text and "68 %" in text and "estimate" in text
        ppl = float(re.search(r"ppl ≈ ([\d,.]+)", text).group(1).replace(",", ""))
        assert ppl == pytest.approx(math.exp(mean[0]), rel=5e-4)  # shown to 4 significant digits
        cur = page.evaluate(CURSOR)
        assert cur["alpha"] == want[0] and cur["y"] == want[2]
        if name in ("α", "γ"):
            assert cur["t"] != before["t"]  # the marker moved on the α–γ projection
        seen.append(got["ppl"])
    assert len(set(seen)) == 3
    # while a pointer drags the slider (before the button is released) the estimate follows the hand
    box = page.get_by_role("slider", name="α").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.43, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.9, box["y"] + box["height"] / 2, steps=6)
    page.wait_for_timeout(200)
    mid = page.evaluate(ESTIMATE)
    page.mouse.up()
    assert mid["alpha"] > 2.0
    assert mid["log_mean"] == pytest.approx(post.predict(mid["alpha"], mid["beta"], mid["gamma"])[0][0], rel=1e-9)
    settled(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "e2e_outcome_map.png"), full_page=False)
    # the posterior came once; a tab that lost it asks, and Python sends it again with the next run
    sig = page.evaluate("() => Array.from(window.__nr.posteriors.keys()).pop()")
    assert sig == post.sig
    page.evaluate("() => window.__nr.posteriors.clear()")
    page.get_by_role("slider", name="α").press("ArrowLeft")  # Python hears the new view: a rerun, no posterior in it
    page.wait_for_function(f"() => window.__nr.posteriors.has('{post.sig}')", timeout=20_000)
    # presentation mode: the map's charts read from the back of the room (tick labels >= 16 px), like the others
    page.goto(f"{url}/exponents?entry={entry.key}&alpha=1&beta=1&gamma=1&sparsity=0.5&present=1")
    page.wait_for_function(READY, timeout=90_000)
    settled(page)
    ticks = page.evaluate(f"""() => ['gamma', 'beta', 'ref'].map(k => {{
        const gd = ({IN_SHADOW})(`[data-om-plot="${{k}}"]`);
        return [gd._fullLayout.xaxis.tickfont.size, gd._fullLayout.yaxis.tickfont.size]; }})""")
    assert all(size >= 16 for pair in ticks for size in pair), ticks
    page.screenshot(path=str(ARTIFACTS / "e2e_outcome_map_present.png"), full_page=False)


def test_measure_this_point_shows_the_measured_value_beside_the_estimate(served, page):
    from neuronrank.runs.store import RunStore

    url, entry, calib, proto = served
    post, _ = library_posterior(entry, calib, proto)
    point = (0.7, 2.0, 0.4)
    page.goto(f"{url}/exponents?entry={entry.key}&alpha={point[0]}&beta={point[1]}&gamma={point[2]}&sparsity=0.5")
    page.wait_for_function(READY, timeout=90_000)
    settled(page)
    shown = page.evaluate(ESTIMATE)
    assert (shown["alpha"], shown["beta"], shown["gamma"]) == point
    page.get_by_role("button", name="Measure this point").click()
    try:
        page.wait_for_function(f"() => {{ const e = ({IN_SHADOW})('[data-om-measured] li[data-state=\"measured\"]'); "
                               "return e !== null; }", timeout=180_000)
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "e2e_outcome_map_failed.png"), full_page=True)
        raise AssertionError("no measured value: " + str([(r["id"], r["status"], r["message"], r["error"])
                                                           for r in RunStore().list(kind="prune", limit=3)]))
    line = page.evaluate(TEXT, '[data-om-measured] li[data-state="measured"]')
    run = [r for r in RunStore().list(kind="prune") if (r.get("meta") or {}).get("from") == "outcome map"]
    assert len(run) == 1
    run = run[0]
    assert run["status"] == "done"
    p, res, est = run["params"], run["result"], run["meta"]["estimate"]
    assert (p["alpha"], p["beta"], p["gamma"], p["sparsity_ratio"], p["sparsity_type"]) == (*point, 0.5, "unstructured")
    assert (p["eval"], p["eval_seqlen"], p["eval_windows"]) == (proto["source"], *PROTO)
    assert res["protocol"]["windows"] == PROTO[1] and res["stats_key"] == entry.key
    # the estimate recorded with the run is the one the map showed when the button was clicked
    assert est["log_mean"] == pytest.approx(shown["log_mean"], rel=1e-9)
    assert est["log_std"] == pytest.approx(shown["log_std"], rel=1e-9)
    assert est["points"] == post.n
    m = re.fullmatch(r"Run (\d+) at α=0\.7, β=2, γ=0\.4: estimated ([\d,.]+) ± ([\d,.]+), measured ([\d,.]+)", line)
    assert m, line
    assert int(m.group(1)) == run["id"]
    assert float(m.group(2).replace(",", "")) == pytest.approx(est["ppl"], rel=5e-4)
    assert float(m.group(4).replace(",", "")) == pytest.approx(res["pruned_ppl"], rel=5e-4)
    # the measured point joined the map's points (the estimate now rests on one more)
    page.wait_for_function(f"() => window.__nr.outcomes.estimate && window.__nr.outcomes.estimate.points === {post.n + 1}",
                           timeout=30_000)
    assert "Traceback" not in page.inner_text("body")
    page.screenshot(path=str(ARTIFACTS / "e2e_outcome_map_measured.png"), full_page=False)
    json.dumps(run["meta"])  # JSON-able as stored
