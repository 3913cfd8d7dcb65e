"""Real browser (Debian Chromium via Playwright): start a small study on the tiny model from the Search
page and see its plots fill — optimization history with the baseline lines, contour, slice, importances.
A screenshot is saved to test-artifacts/e2e_search.png."""

import math
import os

import pytest

from bench._appserver import CHROMIUM, CHROMIUM_ARGS, running_app

from tests.e2e.test_e2e_browser import ARTIFACTS, _settled

pytestmark = [pytest.mark.slow, pytest.mark.e2e,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")]


@pytest.fixture(scope="module")
def tiny_server(isolated_cache, tiny_dir, text_file):
    from neuronrank.engine.statistics import get_stats
    from neuronrank.config.requests import StatsRequest

    # a fresh entry (parameters no other test uses): the newest one, so the sidebar loads it
    get_stats(StatsRequest(model=str(tiny_dir), calib=f"file:{text_file}", nsamples=5, seqlen=16, seed=13,
                           batch_size=5))
    with running_app(dict(os.environ, NEURONRANK_CACHE=str(isolated_cache))) as (url, _):
        yield url


PLOTS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(p => ({
    title: String((p.layout && p.layout.title && (p.layout.title.text || p.layout.title)) || '').replace(/<[^>]+>/g, ''),
    points: (p.data || []).reduce((n, d) => n + ((d.y && d.y.length) || (d.z && d.z.length) || 0), 0),
    shapes: ((p.layout && p.layout.shapes) || []).length}))"""


def test_browser_starts_a_study_and_the_plots_fill(tiny_server, text_file):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1200})
        try:
            page.goto(tiny_server)
            _settled(page)
            page.get_by_role("link", name="Search").click()
            page.wait_for_selector('button:has-text("Start search")', timeout=60_000)
            _settled(page)
            page.get_by_role("textbox", name="Evaluation text").fill(f"file:{text_file}")
            page.get_by_role("spinbutton", name="Eval seqlen").fill("16")
            page.get_by_role("spinbutton", name="Eval windows (0 = all)").fill("8")
            page.get_by_role("spinbutton", name="Trials").fill("5")
            page.get_by_role("spinbutton", name="Halving rungs").fill("1")
            page.get_by_role("textbox", name="Study name (empty: derived from the settings)").fill("browser-study")
            page.keyboard.press("Tab")
            page.get_by_role("button", name="Start search").click()
            page.wait_for_url("**search_run=*", timeout=30_000)
            page.wait_for_selector('text=/Search run \\d+ done/', timeout=300_000)
            # the fragment redraws every 2 s: wait for the four plots with every trial in them
            page.wait_for_function("""() => {
                const plots = Array.from(document.querySelectorAll('.js-plotly-plot'));
                return plots.length >= 4 && plots.every(p => p.data && p.data.length); }""", timeout=60_000)
            _settled(page)
            # the finished run redraws the whole page once: the study is listed under past studies
            page.wait_for_function("() => !document.body.innerText.includes('No studies yet.')", timeout=30_000)
            _settled(page)
            # the baselines' dashed lines keep the log axis on the data (their labels once stretched it to
            # 10^ppl): the axis top is within a decade of the largest trial or baseline perplexity
            top, high = page.evaluate("""() => { const gd = Array.from(document.querySelectorAll('.js-plotly-plot'))
                .find(p => p.layout && p.layout.title && String(p.layout.title.text || p.layout.title)
                    .replace(/<[^>]+>/g, '').startsWith('Optimization'));
                const ys = gd.data.flatMap(t => t.y || []).concat(
                    (gd.layout.shapes || []).map(s => s.y0)).filter(v => v > 0);
                return [gd._fullLayout.yaxis.range[1], Math.max(...ys)]; }""")
            assert top < math.log10(high) + 1, (top, high)
            height = page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollHeight")
            page.set_viewport_size({"width": 1500, "height": min(int(height) + 40, 14000)})
            page.wait_for_timeout(1500)
            page.screenshot(path=str(ARTIFACTS / "e2e_search.png"), full_page=True)
            plots = page.evaluate(PLOTS)
            text = page.inner_text("body")
        finally:
            browser.close()
    titles = [p["title"] for p in plots]
    assert any(t.startswith("Optimization history") for t in titles), titles
    assert "Contour of the pruned perplexity" in titles, titles
    # importances say how many complete trials they rest on
    assert "Parameter importances (5 complete trials)" in titles, titles
    assert any(t.startswith("Slice") for t in titles), titles
    history = next(p for p in plots if p["title"].startswith("Optimization history"))
    assert history["shapes"] == 4 and history["points"] >= 5  # four baseline lines; five trials (+ best line)
    assert "Best NeuronRank-OLD" in text and "wanda baseline" in text and "browser-study" in text
    from neuronrank.search import study as search

    study = search.load_study("browser-study")
    assert search.counts(study)["complete"] == 5
