"""What a researcher preparing a demo does, in Debian Chromium driven by Playwright (not AppTest: a browser
sends what AppTest never does — a plotly point arrives as an object, a link opens in a fresh session).

One Streamlit server on the embedded model's statistics; each test is one user story. Screenshots of
every page are saved to test-artifacts/ (the walk a presenter does before a talk).
"""

import math
import os
import re
import time
from pathlib import Path

import pytest

from bench._appserver import CHROMIUM, CHROMIUM_ARGS, running_app

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"

pytestmark = [pytest.mark.slow, pytest.mark.e2e,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")]


@pytest.fixture(scope="module")
def entry_key(isolated_cache):
    from neuronrank.engine.statistics import get_stats
    from neuronrank.config.requests import StatsRequest

    return get_stats(StatsRequest(nsamples=8, seqlen=64, batch_size=8)).entry.key


@pytest.fixture(scope="module")
def server(isolated_cache, entry_key):
    with running_app(dict(os.environ, NEURONRANK_CACHE=str(isolated_cache))) as (url, _):
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1500, "height": 1100})  # a fresh session each test
    p = ctx.new_page()
    yield p
    ctx.close()


def settled(page, timeout=90_000):
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout)
    page.wait_for_timeout(400)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout)


def small_evaluation(page) -> None:
    """Evaluation on 2 windows of 128 tokens: a prune run of the embedded model in seconds."""
    page.get_by_role("spinbutton", name="Eval seqlen").fill("128")
    page.keyboard.press("Tab")
    settled(page)
    page.get_by_role("spinbutton", name="Eval windows (0 = all)").fill("2")
    page.keyboard.press("Tab")
    settled(page)


def full_screenshot(page, name: str) -> None:
    """The whole page (Streamlit scrolls inside its own container): grow the viewport to its height."""
    h = page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollHeight")
    page.set_viewport_size({"width": 1500, "height": min(int(h) + 40, 14000)})
    page.wait_for_timeout(1500)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    page.set_viewport_size({"width": 1500, "height": 1100})


def body(page) -> str:
    return page.inner_text('[data-testid="stMain"]')


def test_shared_link_restores_page_entry_and_exponents(server, browser, page, entry_key):
    page.goto(f"{server}/exponents")
    settled(page)
    slider = page.locator('input[type=range][aria-label="γ (IDF exponent)"]')
    slider.focus()
    for _ in range(5):
        slider.press("ArrowLeft")
    settled(page)
    page.wait_for_function("() => location.search.includes('gamma=0.5')", timeout=30_000)
    link = page.url
    assert f"entry={entry_key}" in link and "/exponents" in link
    # a colleague opens the link in a browser of their own
    other = browser.new_context(viewport={"width": 1500, "height": 1100})
    try:
        p2 = other.new_page()
        p2.goto(link)
        settled(p2)
        assert p2.get_by_role("heading", name="Exponents").is_visible()
        from urllib.parse import parse_qs, urlparse

        query = parse_qs(urlparse(link).query)  # the exponents, and the page's own controls (layer, logx, …)
        shared = {k: float(query[k][0]) for k in ("alpha", "beta", "gamma", "sparsity")}
        labels = ("α (|W| exponent)", "β (TF exponent)", "γ (IDF exponent)", "sparsity (fraction pruned)")
        values = [float(p2.locator(f'input[type=range][aria-label="{n}"]').input_value()) for n in labels]
        assert values == [shared[k] for k in ("alpha", "beta", "gamma", "sparsity")] and shared["gamma"] == 0.5
        # the histogram is the one for γ = 0.5 on that entry (its title names all neurons of the entry)
        p2.wait_for_function("() => { let ok = false; const walk = (r) => { for (const e of r.querySelectorAll('*')) {"
                             " if (e.classList && e.classList.contains('js-plotly-plot') && e.layout && e.layout.title &&"
                             " String(e.layout.title.text).includes('Scores, all 46,080 neurons')) ok = true;"
                             " if (e.shadowRoot) walk(e.shadowRoot); } }; walk(document); return ok; }",
                             timeout=60_000)
    finally:
        other.close()


def test_clicking_a_scatter_point_shows_that_neuron(server, page, entry_key):
    page.goto(f"{server}/roles?entry={entry_key}")
    settled(page)
    # the scatter draws inside a shadow root (components/scatter): walk them to find it
    find = "(() => { let out = null; const walk = (r) => { for (const e of r.querySelectorAll('*')) {" \
           " if (!out && e.classList && e.classList.contains('js-plotly-plot') && e.data && e.data[0] &&" \
           " e.data[0].type === 'scattergl') out = e; if (e.shadowRoot) walk(e.shadowRoot); } }; walk(document);" \
           " return out; })()"
    page.wait_for_function(f"() => {{ const gd = {find}; return gd && gd._fullData; }}", timeout=60_000)
    page.wait_for_selector(".nr-ctx", timeout=120_000)  # the whole page drawn (the tokenizer loads last)
    settled(page)
    # the browser's own coordinates of the right-most plotted point (isolated: nothing drawn over it)
    where = """() => {
        const gd = %s; gd.scrollIntoView({block: 'center'});
        const d = gd._fullData[0], L = gd._fullLayout;
        let i = 0; for (let j = 0; j < d.x.length; j++) if (d.x[j] > d.x[i]) i = j;
        const x = L.xaxis.type === 'log' ? Math.log10(d.x[i]) : d.x[i];
        const r = gd.querySelector('.nsewdrag').getBoundingClientRect();
        return {x: r.left + L.xaxis.l2p(x), y: r.top + L.yaxis.l2p(d.y[i])}; }""" % find
    page.evaluate(where)
    page.wait_for_timeout(800)
    target = page.evaluate(where)
    x, y = target["x"], target["y"]
    page.mouse.move(x, y)  # the tooltip names the neuron under the mouse, as the user sees it
    page.wait_for_function("() => (%s)._hoverdata && (%s)._hoverdata.length > 0" % (find, find), timeout=10_000)
    hovered = page.evaluate("() => { const h = (%s)._hoverdata[0]; return [h.customdata, h.text]; }" % find)
    page.wait_for_timeout(500)
    page.mouse.click(x, y)
    page.wait_for_timeout(1500)
    settled(page)
    target = {"layer": int(hovered[0]), "neuron": int(hovered[1])}
    text = body(page)
    assert "KeyError" not in text and "Traceback" not in text
    layer = page.get_by_role("spinbutton", name="layer")
    neuron = page.get_by_role("spinbutton", name="neuron")
    deadline = time.time() + 30
    while int(neuron.input_value()) != target["neuron"] and time.time() < deadline:
        page.wait_for_timeout(300)
    assert int(layer.input_value()) == target["layer"] and int(neuron.input_value()) == target["neuron"]
    # the click survives another widget change (the old crash persisted until the page was left)
    page.get_by_text("split by |W|").click()
    settled(page)
    assert "KeyError" not in body(page)
    assert int(neuron.input_value()) == target["neuron"]
    # contexts: the firing token is marked, punctuation never shows as literal asterisks
    marks = page.locator("mark")
    assert marks.count() > 0
    contexts = page.locator(".nr-ctx").all_inner_texts()
    assert contexts and not any("**" in c for c in contexts)


def test_bad_text_source_is_caught_as_typed(server, page, entry_key):
    page.goto(f"{server}/prune?entry={entry_key}")
    settled(page)
    box = page.get_by_role("textbox", name="Evaluation text")
    box.fill("wikki")
    box.press("Enter")
    settled(page)
    assert "'wikki' is not a text source" in body(page)
    assert page.get_by_role("button", name="Start prune + evaluate").is_disabled()
    box.fill("file:/no/such/file.txt")
    box.press("Enter")
    settled(page)
    text = body(page)
    assert "does not exist" in text and "NEURONRANK_ALLOWED_DIRS" not in text
    # exponents are disabled for a method that ignores them; N:M locks the ratio
    box.fill("wiki")
    box.press("Enter")
    settled(page)
    page.get_by_role("combobox", name=re.compile("Method")).click()
    page.get_by_role("option", name="wanda").click()
    settled(page)
    assert page.get_by_role("spinbutton", name="α (|W|)").is_disabled()
    # the comparison group names the method's own (a None option once read "Choose an option"), wanda's here
    assert page.locator('input[aria-label="Comparison group"]').input_value() == "own: per row"
    assert "Weights compete per row" in body(page)  # wanda's own group
    for label, option in (("Calibration order", "sequential"), ("Pruned linears", "all linears"),
                          ("Zero-shot tasks (lm-eval)", "boolq")):
        page.get_by_role("combobox", name=re.compile(re.escape(label))).click()
        page.get_by_role("option", name=option, exact=True).click()
        settled(page)
    page.keyboard.press("Escape")  # close the multiselect's list
    # settings persist across a visit to another page
    page.get_by_role("link", name="Exponents").click()
    settled(page)
    page.get_by_role("link", name="Prune & evaluate").click()
    settled(page)
    assert page.locator('input[aria-label="Method"]').input_value() == "wanda"
    assert page.locator('input[aria-label="Calibration order"]').input_value() == "sequential"
    assert page.locator('input[aria-label="Pruned linears"]').input_value() == "all linears"
    assert "boolq" in page.locator('[data-testid="stMultiSelect"]', has_text="Zero-shot tasks").inner_text()
    # sparsegpt always calibrates layer by layer: shown, locked
    page.get_by_role("combobox", name=re.compile("Method")).click()
    page.get_by_role("option", name="sparsegpt", exact=True).click()
    settled(page)
    fixed = page.locator('input[aria-label="Calibration order"]')
    assert fixed.input_value() == "sequential" and fixed.is_disabled()


def test_prune_run_shows_stages_history_updates_and_compares(server, page, entry_key):
    from neuronrank.runs.store import RunStore

    page.goto(f"{server}/prune?entry={entry_key}")
    settled(page)
    small_evaluation(page)
    for method in ("magnitude", "neuronrank_old"):
        page.get_by_role("combobox", name=re.compile("Method")).click()
        page.get_by_role("option", name=method, exact=True).click()
        settled(page)
        page.get_by_role("button", name="Start prune + evaluate").click()
        page.wait_for_url("**run=*", timeout=30_000)
    # the stage of the followed run is named while it runs (not "starting" over an empty bar)
    page.wait_for_function("() => /perplexity|loading|converting|calibration/.test("
                           "document.querySelector('[data-testid=stMain]').innerText)", timeout=120_000)
    # without leaving the page, the history table catches up with both finished runs
    deadline = time.time() + 300
    while time.time() < deadline:
        runs = RunStore().list(kind="prune")
        if len(runs) >= 2 and all(r["status"] in ("done", "failed") for r in runs[:2]):
            break
        time.sleep(1)
    assert all(r["status"] == "done" for r in RunStore().list(kind="prune")[:2])
    from neuronrank.views import history

    mine = RunStore().list(kind="prune")[:2]
    want = sorted({history.series_label(r["params"]["prune_method"], r["params"]["sparsity_type"],
                                        r["params"]["alpha"], r["params"]["beta"], r["params"]["gamma"])
                   for r in mine})
    # without leaving the page, the history (a fragment polling every 2 s while runs are active) redraws the
    # chart with both finished runs; the table is a canvas, so the chart's own traces are what is checked
    chart_names = """() => { const gd = Array.from(document.querySelectorAll('.js-plotly-plot'))
        .find(p => p.layout && p.layout.title && String(p.layout.title.text).includes('Pruned perplexity vs'));
        return gd ? gd.data.map(t => t.name) : []; }"""
    try:
        page.wait_for_function(f"want => ({chart_names})().filter(n => want.includes(n)).length == want.length",
                               arg=want, timeout=60_000)
    finally:
        names = page.evaluate(chart_names)
    assert set(want) <= set(names), (want, names)
    settled(page)
    # the y axis spans the plotted perplexities (the dense line's label once stretched it to 10^ppl)
    top, ppl = page.evaluate("""() => { const gd = Array.from(document.querySelectorAll('.js-plotly-plot'))
        .find(p => p.layout && p.layout.title && String(p.layout.title.text).includes('Pruned perplexity vs'));
        return [gd._fullLayout.yaxis.range[1], Math.max(...gd.data.flatMap(t => t.y))]; }""")
    assert top < math.log10(ppl) + 1, (top, ppl)
    assert any(n.startswith("magnitude") for n in want) and any("α=" in n for n in want)
    full_screenshot(page, "demo_prune")


def test_reload_during_a_sweep_reattaches(server, page, entry_key):
    from neuronrank.runs.store import RunStore

    page.goto(f"{server}/prune?entry={entry_key}")
    settled(page)
    small_evaluation(page)
    page.get_by_role("textbox", name="x values").fill("0, 1")
    page.get_by_role("textbox", name="y values").fill("1")
    page.get_by_role("button", name="Queue sweep").click()
    settled(page)
    page.reload()  # mid-sweep
    settled(page)
    assert re.search(r"sweep-\w+: α \(\|W\|\) × γ \(IDF\)", page.locator('input[aria-label="Sweep"]').input_value())
    deadline = time.time() + 400
    while time.time() < deadline:
        runs = [r for r in RunStore().list(kind="prune") if str(r.get("grp", "")).startswith("sweep-")]
        if runs and all(r["status"] in ("done", "failed") for r in runs):
            break
        time.sleep(1)
    page.wait_for_function("() => /best [\\d.]+ at alpha=/.test(document.querySelector('[data-testid=stMain]')"
                           ".innerText) || Array.from(document.querySelectorAll('.js-plotly-plot')).some(p => "
                           "p.layout && p.layout.title && /best/.test(String(p.layout.title.text)))",
                           timeout=120_000)
    settled(page)
    full_screenshot(page, "demo_sweep")


def test_walk_every_page_for_screenshots(server, page, entry_key):
    for name in ("", "exponents", "roles", "prune"):
        page.goto(f"{server}/{name}?entry={entry_key}")
        settled(page)
        assert page.locator('[data-testid="stException"]').count() == 0
        assert "Traceback" not in body(page)
        full_screenshot(page, f"demo_{name or 'statistics'}")
