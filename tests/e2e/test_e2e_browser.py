"""One real-browser test: Debian Chromium driven by Playwright against a Streamlit server started here.

Open the app on the embedded model's statistics, move the α slider and see the histogram change, start a
small prune + evaluate, reload the page mid-run, and see the run finish. A screenshot is saved to
test-artifacts/.
"""

import os
import time
from pathlib import Path

import pytest

from bench._appserver import CHROMIUM, CHROMIUM_ARGS, running_app

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"

pytestmark = [pytest.mark.slow, pytest.mark.e2e,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")]



@pytest.fixture(scope="module")
def server(isolated_cache):
    from neuronrank.engine.statistics import get_stats
    from neuronrank.config.requests import StatsRequest

    # the statistics being explored: the embedded model, a small calibration set
    get_stats(StatsRequest(nsamples=4, seqlen=64, batch_size=4))
    with running_app(dict(os.environ, NEURONRANK_CACHE=str(isolated_cache))) as (url, _):
        yield url


def _settled(page, timeout=60_000):
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout)
    page.wait_for_timeout(300)


def _histogram_y(page):
    """The score histogram's counts (the explorer draws inside a shadow root: walk them)."""
    return page.evaluate("""() => { let p = null; const walk = (r) => { for (const e of r.querySelectorAll('*')) {
        if (!p && e.classList && e.classList.contains('js-plotly-plot') && e.data && e.data.length
            && e.data[0].type === 'bar') p = e; if (e.shadowRoot) walk(e.shadowRoot); } }; walk(document);
        return p ? Array.from(p.data[0].y) : null; }""")


def test_browser_slider_and_prune_run_survive_reload(server):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        try:
            page.goto(server)
            _settled(page)
            page.get_by_role("link", name="Exponents").click()
            page.wait_for_function("() => window.__nr && window.__nr.explorer && window.__nr.explorer.result",
                                   timeout=60_000)
            _settled(page)
            before = _histogram_y(page)
            assert before and sum(before) > 0
            slider = page.get_by_role("slider").first  # α
            slider.focus()
            for _ in range(10):
                slider.press("ArrowRight")
            page.wait_for_timeout(500)
            _settled(page)
            after, t0 = before, time.time()
            while after == before and time.time() - t0 < 30:
                page.wait_for_timeout(300)
                after = _histogram_y(page)
            assert after != before and sum(after) == sum(before)  # same neurons, other scores
            page.screenshot(path=str(ARTIFACTS / "e2e_exponents.png"), full_page=True)

            page.get_by_role("link", name="Prune & evaluate").click()
            _settled(page)
            page.get_by_role("spinbutton", name="Eval seqlen").fill("128")
            page.keyboard.press("Tab")
            _settled(page)
            page.get_by_role("spinbutton", name="Eval windows (0 = all)").fill("2")
            page.keyboard.press("Tab")
            _settled(page)
            page.get_by_role("button", name="Start prune + evaluate").click()
            page.wait_for_url("**run=*", timeout=30_000)
            page.wait_for_selector('[data-testid="stProgress"]', timeout=60_000)
            page.reload()  # mid-run: the run id is in the URL and the page re-attaches
            page.wait_for_selector('[data-testid="stMetricLabel"]:has-text("Pruned perplexity")', timeout=240_000)
            _settled(page)
            page.screenshot(path=str(ARTIFACTS / "e2e_prune.png"), full_page=True)
            text = page.inner_text("body")
            assert "Dense perplexity" in text and "seqlen 128, 2 windows" in text
        finally:
            browser.close()
    from neuronrank.runs.store import RunStore

    runs = RunStore().list(kind="prune")
    assert runs and runs[0]["status"] == "done" and runs[0]["result"]["protocol"]["windows"] == 2
    assert runs[0]["result"]["pruned_ppl"] > runs[0]["result"]["dense_ppl"]


def test_link_text_from_the_url_is_text_in_the_browser(server):
    """What the browser makes of hostile query parameters: no link to, no image from, another site; a
    notice that shows the characters; no traceback (and a huge run id is no OverflowError)."""
    from urllib.parse import quote, urlsplit

    from playwright.sync_api import sync_playwright

    cases = [("", "entry", "[x](https://example.com)"),
             ("prune", "run", "![t](https://example.com/t.png)"),
             ("prune", "run", "99999999999999999999999999"),
             ("search", "study", "[x](https://example.com)"),
             ("search", "search_run", "99999999999999999999999999")]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        fetched = []
        page.on("request", lambda r: fetched.append(r.url) if (urlsplit(r.url).hostname or "").endswith("example.com")
                else None)
        try:
            for path, name, value in cases:
                page.goto(f"{server}/{path}?{name}={quote(value)}")
                _settled(page)
                page.wait_for_timeout(500)
                assert page.locator('a[href*="example.com"]').count() == 0, (path, name)
                assert page.locator('img[src*="example.com"]').count() == 0, (path, name)
                assert page.locator('[data-testid="stException"]').count() == 0, (path, name)
                text = page.inner_text("body").replace("\u2060", "")  # invisible joiners break autolinks
                assert f"{name}={value[:40]}" in text and "it was ignored" in text, (path, name, text[:400])
                assert "Traceback" not in text and "site-packages" not in text
        finally:
            browser.close()
    assert fetched == []  # the browser never reached out to the other site
