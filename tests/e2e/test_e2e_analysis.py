"""The analysis pages in Debian Chromium, as a presenter and the audience use them: the Exponents explorer computes
in the browser (drag a slider, press a key), Python hears the view once; a shared link restores what the
presenter sees in a fresh browser (layer, log x, overlap grouping, the Roles view and the chosen neuron); a click on
the scatter opens that neuron; a bad URL value gives a notice. One server and one browser for the module, on a
small real model (4 layers × 256 neurons) so the whole module takes seconds, not minutes.
"""

import os
import re
import time
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from playwright.sync_api import expect

from bench._appserver import CHROMIUM, running_app

pytestmark = [pytest.mark.slow, pytest.mark.e2e,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")]

IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
READY = "() => window.__nr && window.__nr.explorer && window.__nr.explorer.result && window.__nr.explorer.result.overlap"
# a Plotly chart anywhere in the page, shadow roots included (the components draw inside one)
FIND = """(test) => { let out = null; const walk = (r) => { for (const e of r.querySelectorAll('*')) {
    if (!out && e.classList && e.classList.contains('js-plotly-plot') && e.data && test(e)) out = e;
    if (e.shadowRoot) walk(e.shadowRoot); } }; walk(document); return out; }"""
HIST_Y = f"""() => {{ const gd = ({FIND})(e => e.data[0].type === 'bar' && String(e.layout.title.text).startsWith('Scores, all'));
    return gd ? Array.from(gd.data[0].y) : null; }}"""
SCATTER = f"() => ({FIND})(e => e.data[0].type === 'scattergl')"


@pytest.fixture(scope="module")
def entry(isolated_cache, tmp_path_factory, text_file):
    from neuronrank.config.requests import StatsRequest
    from neuronrank.engine.statistics import get_stats
    from tests.conftest import write_tiny_model_dir

    model = write_tiny_model_dir(tmp_path_factory.mktemp("tiny4") / "model", layers=4, inter=256, seed=2)
    res = get_stats(StatsRequest(model=str(model), calib=f"file:{text_file}", nsamples=8, seqlen=32, seed=0,
                                 batch_size=4))
    from neuronrank.views import explorer

    return res.entry.key, explorer.neuron_arrays(res.stats.to_frame())


@pytest.fixture(scope="module")
def server(isolated_cache, entry):
    with running_app(dict(os.environ, NEURONRANK_CACHE=str(isolated_cache))) as (url, _):
        yield url


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1440, "height": 1000})  # a fresh session each test
    p = ctx.new_page()
    errors = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    yield p
    ctx.close()
    assert errors == []  # no JavaScript error in the page


def settled(page, timeout=60_000):
    # a page just opened reads "not running" before its first script run: wait for the page's title first
    page.wait_for_selector('[data-testid="stMain"] h1', timeout=timeout)
    page.wait_for_selector(IDLE, timeout=timeout)
    page.wait_for_timeout(400)
    page.wait_for_selector(IDLE, timeout=timeout)


def open_explorer(page, url):
    page.goto(url)
    page.wait_for_function(READY, timeout=60_000)
    settled(page)


class ScriptRuns:
    """What the page and the server say to each other about script runs, read from the websocket's own frames
    (Streamlit's BackMsg / ForwardMsg protobufs): `requested` counts the browser's rerun requests, `finished` the
    server's script-finished messages. A page attribute can miss a fast run (React may draw "running" and
    "notRunning" in one commit); the frames cannot. Attach before the page opens: the socket starts with it."""

    def __init__(self, page):
        self.requested = self.finished = 0
        page.on("websocket", self._socket)

    def _socket(self, ws):
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        def sent(payload):
            if isinstance(payload, (bytes, bytearray)):
                m = BackMsg()
                m.ParseFromString(bytes(payload))
                self.requested += m.WhichOneof("type") == "rerun_script"

        def received(payload):
            if isinstance(payload, (bytes, bytearray)):
                m = ForwardMsg()
                m.ParseFromString(bytes(payload))
                self.finished += m.WhichOneof("type") == "script_finished"

        ws.on("framesent", sent)
        ws.on("framereceived", received)

    def reset(self) -> None:
        self.requested = self.finished = 0


def heard(page, runs: ScriptRuns, alpha: float, timeout=30.0) -> None:
    """Wait until Python has heard the explorer's view: a rerun was requested and has finished with `alpha` in the
    URL, and the page is idle again — a condition, so a slow machine only waits longer."""
    t = time.time()
    while not (runs.requested >= 1 and runs.finished >= runs.requested and page.evaluate(
            """(a) => Math.abs(parseFloat(new URLSearchParams(location.search).get('alpha')) - a) < 1e-9""", alpha)):
        assert time.time() - t < timeout, (runs.requested, runs.finished, page.url)
        page.wait_for_timeout(50)  # (Playwright delivers the socket's frames while it waits)
    settled(page)  # (and stays idle: a second run would start within this quiet moment and be counted)


def query(page) -> dict:
    return {k: v[0] for k, v in parse_qs(urlparse(page.url).query).items()}


def library_counts(arrays, alpha, beta, gamma, log=True):
    from neuronrank.views import explorer

    return explorer.score_histograms(arrays, alpha, beta, gamma, log=log)[1].counts.tolist()


def test_key_press_and_drag_recompute_in_the_browser_and_python_hears_once(server, page, entry):
    key, arrays = entry
    runs = ScriptRuns(page)
    open_explorer(page, f"{server}/exponents?entry={key}")
    assert page.evaluate(HIST_Y) == library_counts(arrays, 1.0, 1.0, 1.0)
    runs.reset()
    # a key press on the focused α slider: the histogram holds the library's counts for α = 1.1 at once
    slider = page.get_by_role("slider", name="α")
    slider.focus()
    slider.press("ArrowRight")
    page.wait_for_function(f"(want) => JSON.stringify(({HIST_Y})()) === JSON.stringify(want)",
                           arg=library_counts(arrays, 1.1, 1.0, 1.0), timeout=5_000)
    heard(page, runs, 1.1)  # Python heard it: one rerun, finished, with the value in the URL
    assert (runs.requested, runs.finished) == (1, 1)
    # a drag: the histogram follows the hand, Python hears the view once, when the hand stops
    page.evaluate("""() => { window.__ups = 0; let gd = null, last = null;
        const poll = () => { const y = (%s)(); if (last && JSON.stringify(y) !== last) window.__ups++;
          last = JSON.stringify(y); requestAnimationFrame(poll); }; requestAnimationFrame(poll); }"""
                  % HIST_Y)
    runs.reset()
    box = slider.bounding_box()
    y = box["y"] + box["height"] / 2
    x_of = lambda v: box["x"] + 8 + (box["width"] - 16) * v / 3.0  # noqa: E731
    page.mouse.move(x_of(1.1), y)
    page.mouse.down()
    for v in np.arange(1.2, 2.55, 0.1):
        page.mouse.move(x_of(v), y, steps=2)
        page.wait_for_timeout(40)
    during = page.evaluate("window.__ups")
    runs_during = runs.requested
    page.mouse.up()
    alpha = float(slider.input_value())
    assert during >= 5 and runs_during == 0  # redrawn while dragging, no server round trip
    heard(page, runs, alpha)  # the drag's end reached Python (250 ms after the hand stops, then one rerun)
    assert (runs.requested, runs.finished) == (1, 1)
    assert float(query(page)["alpha"]) == alpha and alpha >= 2.0
    assert page.evaluate(HIST_Y) == library_counts(arrays, alpha, 1.0, 1.0)


def test_shared_link_restores_the_explorer_in_a_fresh_browser(server, browser, page, entry):
    key, arrays = entry
    open_explorer(page, f"{server}/exponents?entry={key}")
    page.get_by_role("combobox", name="Layer").select_option("2")
    page.get_by_role("checkbox", name="log x").uncheck()
    page.get_by_role("radio", name="over the whole model").check()
    gamma = page.get_by_role("slider", name="γ")
    gamma.focus()
    for _ in range(3):
        gamma.press("ArrowLeft")
    page.wait_for_function("() => /layer=2&.*logx=0&.*overlap=global/.test(location.search) && "
                           "location.search.includes('gamma=0.7')", timeout=10_000)
    settled(page)
    mine = page.evaluate("window.__nr.explorer.result")
    link = page.url
    other = browser.new_context(viewport={"width": 1280, "height": 900})  # the audience's own browser
    try:
        p2 = other.new_page()
        open_explorer(p2, link)
        theirs = p2.evaluate("window.__nr.explorer.result")
        assert theirs["view"] == mine["view"] == {"alpha": 1, "beta": 1, "gamma": 0.7, "sparsity": 0.5, "layer": 2,
                                                  "log": False, "grouping": "globally"}
        assert p2.get_by_role("combobox", name="Layer").input_value() == "2"
        assert not p2.get_by_role("checkbox", name="log x").is_checked()
        assert p2.get_by_role("radio", name="over the whole model").is_checked()
        # the same numbers: the overlap the audience reads is the presenter's
        assert theirs["overlap"] == mine["overlap"] and theirs["lcounts"] == mine["lcounts"]
        jaccard = p2.locator(".metric .mvalue").first.inner_text()
        assert jaccard == f"{mine['overlap']['magnitude']['jaccard']:.3f}"
        # linear x fitted to the scores: the cut's label never stretches the axis
        rng = p2.evaluate(f"() => ({FIND})(e => e.data[0].type === 'bar')._fullLayout.xaxis.range")
        assert rng == pytest.approx([theirs["edges"][0], theirs["edges"][-1]])
    finally:
        other.close()


def test_tied_scores_are_said_live(server, page, entry):
    key, _ = entry
    open_explorer(page, f"{server}/exponents?entry={key}&alpha=0&beta=0&gamma=0")
    warning = page.locator("[data-ties]")
    assert warning.is_visible() and "Every neuron has the same score" in warning.inner_text()
    page.get_by_role("slider", name="α").focus()
    page.keyboard.press("ArrowRight")  # α = 0.1: the scores are |W|^0.1, no longer tied
    page.wait_for_function("() => { let w = null; const walk = (r) => { for (const e of r.querySelectorAll('*')) {"
                           " if (e.matches('[data-ties]')) w = e; if (e.shadowRoot) walk(e.shadowRoot); } };"
                           " walk(document); return w && w.hidden; }", timeout=5_000)


def test_roles_link_restores_the_view_and_a_click_opens_a_neuron(server, browser, entry):
    key, arrays = entry
    ctx = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = ctx.new_page()
    try:
        page.goto(f"{server}/roles?entry={key}&split=1&logtf=0&cells=percent&neuron=1:7")
        settled(page)
        page.wait_for_function(f"() => {{ const gd = ({SCATTER})(); return gd && gd._fullData; }}", timeout=60_000)
        assert page.get_by_role("checkbox", name="split by |W|").is_checked()
        assert not page.get_by_role("checkbox", name="log TF axis").is_checked()
        neuron_box = page.get_by_role("spinbutton", name="neuron")
        assert page.get_by_role("spinbutton", name="layer").input_value() == "1" and neuron_box.input_value() == "7"
        # every neuron is plotted (no sample)
        assert page.evaluate(f"() => ({SCATTER})()._fullData[0].x.length") == len(arrays["tf"])
        # hover the right-most point: the tooltip names its neuron; a click opens it
        target = page.evaluate(f"""() => {{ const gd = ({SCATTER})(); gd.scrollIntoView({{block: 'center'}});
            const d = gd._fullData[0], L = gd._fullLayout; let i = 0;
            for (let j = 0; j < d.x.length; j++) if (d.x[j] > d.x[i]) i = j;
            const r = gd.querySelector('.nsewdrag').getBoundingClientRect();
            return {{i, x: r.left + L.xaxis.l2p(d.x[i]), y: r.top + L.yaxis.l2p(d.y[i])}}; }}""")
        page.wait_for_timeout(500)
        target = page.evaluate(f"""() => {{ const gd = ({SCATTER})(), d = gd._fullData[0], L = gd._fullLayout, i = {target['i']};
            const r = gd.querySelector('.nsewdrag').getBoundingClientRect();
            return {{i, x: r.left + L.xaxis.l2p(d.x[i]), y: r.top + L.yaxis.l2p(d.y[i])}}; }}""")
        width = len(arrays["tf"]) // (int(arrays["layer"][-1]) + 1)
        layer, neuron = divmod(target["i"], width)
        page.mouse.move(target["x"], target["y"])
        page.wait_for_function(f"() => {{ const gd = ({SCATTER})(); return gd._hoverdata && gd._hoverdata.length; }}",
                               timeout=10_000)
        hovered = page.evaluate(f"() => {{ const h = ({SCATTER})()._hoverdata[0]; return [h.customdata, h.text]; }}")
        assert hovered == [layer, neuron]
        page.mouse.click(target["x"], target["y"])
        deadline = time.time() + 30
        while neuron_box.input_value() != str(neuron) and time.time() < deadline:
            page.wait_for_timeout(200)
        settled(page)
        assert page.get_by_role("spinbutton", name="layer").input_value() == str(layer)
        assert neuron_box.input_value() == str(neuron)
        assert query(page)["neuron"] == f"{layer}:{neuron}"  # the neuron's own link
        tf = page.locator('[data-testid="stMetric"]').filter(has_text="TF").first.inner_text()
        assert f"{arrays['tf'][target['i']]:.4g}" in tf
        # the link opens that neuron in a fresh browser
        link = page.url
        p2 = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        p2.goto(link)
        # wait for the first script run to draw the box (before it, the page can already read "not running")
        expect(p2.get_by_role("spinbutton", name="neuron")).to_have_value(str(neuron), timeout=60_000)
        settled(p2)
        assert p2.get_by_role("spinbutton", name="layer").input_value() == str(layer)
        assert p2.get_by_role("spinbutton", name="neuron").input_value() == str(neuron)
        assert p2.get_by_role("checkbox", name="split by |W|").is_checked()
        p2.context.close()
        # a tab that lost the arrays asks for them again: the explorer draws after a page switch
        page.evaluate("() => window.__nr.entries.clear()")
        page.get_by_role("link", name="Exponents").click()
        page.wait_for_function(READY, timeout=30_000)
    finally:
        ctx.close()


def test_bad_url_values_give_a_notice(server, page, entry):
    key, _ = entry
    page.goto(f"{server}/exponents?entry={key}&layer=99&overlap=sideways")
    settled(page)
    notices = page.locator('[data-testid="stAlert"]').all_inner_texts()
    assert any("layer=99 is not in this entry (4 layers" in n for n in notices), notices
    assert any("overlap=sideways is not per-layer or global" in n for n in notices), notices
    page.wait_for_function(READY, timeout=30_000)  # the explorer shows the defaults instead
    assert query(page)["layer"] == "0" and query(page)["overlap"] == "per-layer"
    page.goto(f"{server}/roles?entry={key}&neuron=4:0&q=0.3")
    settled(page)
    notices = page.locator('[data-testid="stAlert"]').all_inner_texts()
    assert any(re.search(r"neuron=4:0 is not in this entry \(4 layers × 256 neurons\)", n) for n in notices), notices
    assert any("q=0.3 is not one of 0.5, 0.75" in n for n in notices), notices
    assert page.locator('[data-testid="stException"]').count() == 0
