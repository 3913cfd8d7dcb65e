"""Real browser (Debian Chromium via Playwright): open the Compare page on a shared link naming two entries
of one model and read its rank-correlation chart — the numbers of views.compare — and the role-transition
matrix. A screenshot is saved to test-artifacts/e2e_compare.png."""

import os

import numpy as np
import pytest

from bench._appserver import CHROMIUM, CHROMIUM_ARGS, running_app
from tests.e2e.test_e2e_browser import ARTIFACTS, _settled

pytestmark = [pytest.mark.slow, pytest.mark.e2e,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")]

CHARTS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(p => ({
    title: String((p.layout && p.layout.title && (p.layout.title.text || p.layout.title)) || '').replace(/<[^>]+>/g, ''),
    data: (p.data || []).map(d => ({name: d.name || '', y: d.y ? Array.from(d.y) : null,
                                    z: d.z ? Array.from(d.z, r => Array.from(r)) : null}))}))"""


@pytest.fixture(scope="module")
def two_entries(isolated_cache, tiny_dir, text_file):
    from neuronrank.config.requests import StatsRequest
    from neuronrank.engine.statistics import get_stats

    # two calibration settings of one model: another seed, and the product site
    a = get_stats(StatsRequest(model=str(tiny_dir), calib=f"file:{text_file}", nsamples=6, seqlen=16, seed=21,
                               batch_size=6))
    b = get_stats(StatsRequest(model=str(tiny_dir), calib=f"file:{text_file}", nsamples=6, seqlen=16, seed=22,
                               site="product", batch_size=6))
    with running_app(dict(os.environ, NEURONRANK_CACHE=str(isolated_cache))) as (url, _):
        yield url, a, b


def test_browser_compares_two_entries(two_entries):
    from playwright.sync_api import sync_playwright

    from neuronrank.views import compare

    url, a, b = two_entries
    fa, fb = a.stats.to_frame(), b.stats.to_frame()
    want = compare.rank_correlations(fa, fb, 1.0, 1.0, 1.0)
    table, changed = compare.role_transitions(fa, fb, quantile=0.9)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        try:
            page.goto(f"{url}/compare?entry={a.entry.key}&entry2={b.entry.key}")
            page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 5", timeout=90_000)
            _settled(page)
            charts = {c["title"]: c for c in page.evaluate(CHARTS)}
            title = "Rank correlation of A and B per layer (Spearman ρ)"
            assert title in charts, list(charts)
            corr = charts[title]
            assert [d["name"] for d in corr["data"]] == ["TF", "IDF", "score"]
            np.testing.assert_allclose([d["y"] for d in corr["data"]], want[["tf", "idf", "score"]].T.to_numpy(),
                                       rtol=1e-9)
            roles = next(c for t, c in charts.items() if t.startswith("Role in A (rows)"))
            assert roles["data"][0]["z"] == table.to_numpy().tolist() and f"{changed:,} neurons change" in roles["title"]
            text = page.inner_text("body")
            assert "site: gate → product" in text and "seed: 21 → 22" in text
            assert "Traceback" not in text
            page.screenshot(path=str(ARTIFACTS / "e2e_compare.png"), full_page=True)
            plots = page.locator(".js-plotly-plot")
            for i in range(plots.count()):
                plots.nth(i).screenshot(path=str(ARTIFACTS / f"e2e_compare_chart{i}.png"))
        finally:
            browser.close()
