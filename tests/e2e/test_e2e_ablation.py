"""Real browser (Debian Chromium via Playwright): on the Roles page, queue a role ablation, reload while it
runs (the run id is in the URL), and read its chart — the worker's numbers, one bar per class beside its
random controls. A screenshot is saved to test-artifacts/e2e_ablation.png."""

import os

import pytest

from bench._appserver import CHROMIUM, CHROMIUM_ARGS, running_app
from tests.e2e.test_e2e_browser import ARTIFACTS, _settled

pytestmark = [pytest.mark.slow, pytest.mark.e2e,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")]

CHART = """() => {
    const p = Array.from(document.querySelectorAll('.js-plotly-plot')).find(p => p.layout && p.layout.title &&
        String(p.layout.title.text || p.layout.title).replace(/<[^>]+>/g, '').startsWith('Perplexity with each role zeroed'));
    return p ? p.data.map(d => ({name: d.name, x: Array.from(d.x), y: Array.from(d.y)})) : null; }"""


@pytest.fixture(scope="module")
def served(isolated_cache, tiny_dir, text_file):
    from neuronrank.config.requests import StatsRequest
    from neuronrank.engine.statistics import get_stats

    res = get_stats(StatsRequest(model=str(tiny_dir), calib=f"file:{text_file}", nsamples=4, seqlen=16, seed=31,
                                 batch_size=4))
    with running_app(dict(os.environ, NEURONRANK_CACHE=str(isolated_cache))) as (url, _):
        yield url, res.entry


def _set(page, role, name, value):
    page.get_by_role(role, name=name).fill(str(value))
    page.keyboard.press("Tab")
    _settled(page)


def test_browser_runs_a_role_ablation_and_reads_its_chart(served, text_file):
    from playwright.sync_api import sync_playwright

    from neuronrank.runs.store import RunStore

    url, entry = served
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1100})
        try:
            page.goto(f"{url}/roles?entry={entry.key}")
            page.wait_for_selector('button:has-text("Run ablation")', timeout=90_000)
            _settled(page)
            _set(page, "textbox", "Evaluation text", f"file:{text_file}")
            _set(page, "spinbutton", "Eval seqlen", 16)
            _set(page, "spinbutton", "Eval windows (0 = all)", 3)
            _set(page, "spinbutton", "Random controls", 2)
            # the cost follows the form: 5 classes x (1 + 2 controls)
            page.wait_for_function("() => document.body.innerText.includes('Cost: 15 perplexity evaluations')",
                                   timeout=30_000)
            page.get_by_role("button", name="Run ablation").click()
            page.wait_for_url("**ablate_run=*", timeout=30_000)
            page.reload()  # the run survives a reload: the page re-attaches to it from the URL
            try:
                page.wait_for_function(f"() => ({CHART})() !== null", timeout=240_000)
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "e2e_ablation_failed.png"), full_page=True)
                raise AssertionError("no ablation chart: " + str(page.evaluate("() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(p => JSON.stringify(p.layout && p.layout.title))")))
            _settled(page)
            bars = page.evaluate(CHART)
            run_id = int(page.url.split("ablate_run=")[1].split("&")[0])
            page.screenshot(path=str(ARTIFACTS / "e2e_ablation.png"), full_page=True)
            assert "Traceback" not in page.inner_text("body")
        finally:
            browser.close()
    run = RunStore().get(run_id)
    assert run["status"] == "done" and run["kind"] == "ablate"
    classes = run["result"]["classes"]
    assert [b["name"] for b in bars[:2]] == ["class zeroed", "random sets (mean ± sd)"]
    assert len(bars[0]["x"]) == len(classes) == 5
    for got, c in zip(bars[0]["y"], classes):
        assert got == pytest.approx(c["ppl"], rel=1e-9)
    for got, c in zip(bars[1]["y"], classes):  # an empty class has no controls: no bar
        assert (got is None and c["neurons"] == 0) or got == pytest.approx(c["random_mean"], rel=1e-9)
