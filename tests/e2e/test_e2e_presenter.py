"""What a presenter found walking the app in Chromium at 1440 px and at a 1280 px projector at 150 % zoom: the
run history read "None" for methods without exponents, the sidebar's entry picker and the Prune and Roles
forms cut what they show, chart export had no browser check, and a link with a search run but no study name
showed the form's defaults beside that study.

The module shares test_e2e_room's cache (a tiny model's statistics, a run history, two studies) and server;
it adds two statistics entries, three runs and one study of its own.
"""

import struct
from dataclasses import asdict, replace

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from tests.e2e.test_e2e_room import (PROJECTOR, _measured, context, main_text, plot, room,  # noqa: F401
                                     server, settled, wait_plot)

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SIZES = {"1440": {}, "1280 at 150 %": PROJECTOR}

# JS: the texts of inputs (a selectbox shows its value in one) and chips that do not fit their box. An input's
# scrollWidth leaves its placeholder out ("auto: 16 on…" was cut), so the text is measured in the input's font.
CUT = """(root) => {
    const ctx = document.createElement('canvas').getContext('2d'), cut = [];
    for (const el of root.querySelectorAll('input')) {
        const text = el.value || el.placeholder, cs = getComputedStyle(el);
        if (!text || el.type === 'checkbox' || el.type === 'radio' || el.getBoundingClientRect().width === 0) continue;
        ctx.font = cs.font;
        const room = el.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
        if (ctx.measureText(text).width > room + 0.5) cut.push([el.getAttribute('aria-label'), text, Math.round(room)]);
    }
    for (const chip of root.querySelectorAll('[data-tag]')) {
        const box = chip.closest('[data-testid=stMultiSelectTagsContainer]').getBoundingClientRect();
        const r = chip.getBoundingClientRect(), label = chip.querySelector('[title]') || chip;
        if (r.left < box.left - 0.5 || r.right > box.right + 0.5 || r.bottom > box.bottom + 0.5
            || label.scrollWidth > label.clientWidth + 1) cut.push(['chip', chip.textContent, Math.round(box.width)]);
    }
    for (const ph of root.querySelectorAll('[data-testid=stMultiSelect] [id$=placeholder], [data-testid=stMultiSelect] span')) {
        if (ph.children.length === 0 && ph.scrollWidth > ph.clientWidth + 1) cut.push(['placeholder', ph.textContent, ph.clientWidth]);
    }
    return cut; }"""


@pytest.fixture(scope="module")
def entries(room):
    """Three statistics entries of the one tiny model: the room's, one of another site, one with more windows."""
    from neuronrank.config.requests import StatsRequest
    from neuronrank.engine.statistics import get_stats

    calib = {**room["calib"], "batch_size": 4}
    return [room["entry"], get_stats(StatsRequest(**{**calib, "site": "product"})).entry.key,
            get_stats(StatsRequest(**{**calib, "nsamples": 8})).entry.key]


# ----------------------------------------------------------------------------------------------
# the run history


# every text the page draws on a canvas (the tables are canvases: their cells are not in the DOM)
DRAWN = """() => { window.__drawn = [];
    const orig = CanvasRenderingContext2D.prototype.fillText;
    CanvasRenderingContext2D.prototype.fillText = function (text, x, y, ...rest) {
        const t = this.getTransform();
        window.__drawn.push({text: String(text), canvas: this.canvas, x: t.a * x + t.e, y: t.d * y + t.f});
        return orig.call(this, text, x, y, ...rest); }; }"""


def test_the_run_history_shows_a_dash_for_methods_without_exponents_and_sorts_them_as_numbers(server, room, context):
    from neuronrank.config.requests import PruneRequest
    from neuronrank.runs.store import RunStore

    for alpha in (0.5, 10.0, 2.0):  # "10" < "2" as text: a text column would sort them wrong
        _measured(PruneRequest(**room["calib"], sparsity_ratio=0.5, alpha=alpha, beta=1.0, gamma=1.0, eval="wiki",
                               eval_seqlen=512, eval_windows=16), 30.0 + alpha, RunStore())
    page = context()
    page.add_init_script(f"({DRAWN})()")
    page.goto(f"{server}/prune?entry={room['entry']}")
    settled(page)
    grid = '[data-testid=stDataFrame]'  # the history is the page's first table
    page.wait_for_function(f"() => document.querySelector('{grid}') && "
                           f"document.querySelector('{grid}').querySelectorAll('td').length > 0", timeout=30_000)
    page.wait_for_timeout(1000)
    drawn = page.evaluate(f"""() => {{ const g = document.querySelector('{grid}');  // its header and body canvases
        return window.__drawn.filter(d => g.contains(d.canvas)).map(d => d.text); }}""")
    assert "alpha" in drawn and "magnitude" in drawn and "wanda" in drawn
    assert "None" not in drawn, [t for t in drawn if t == "None"]
    assert "–" in drawn  # magnitude's, wanda's and random's α, β, γ
    # clicks on the α header sort the runs by α as numbers: 10 > 2 > 1 > 0.5
    page.locator(grid).first.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    at = page.evaluate(f"""() => {{ const g = document.querySelector('{grid}');
        const d = window.__drawn.filter(d => g.contains(d.canvas) && d.text === 'alpha').pop();
        const r = d.canvas.getBoundingClientRect(), dpr = window.devicePixelRatio;
        return {{x: r.left + d.x / dpr + 8, y: r.top + d.y / dpr}}; }}""")
    i = page.evaluate(f"""() => Array.from(document.querySelector('{grid}').querySelectorAll('th'))
        .findIndex(t => t.textContent === 'alpha')""")  # a sorted header reads its arrow too
    page.mouse.click(at["x"], at["y"])  # ascending (the missing ones first), again: descending
    page.wait_for_timeout(800)
    page.mouse.click(at["x"], at["y"])
    page.wait_for_timeout(800)
    col = page.evaluate(f"""() => Array.from(document.querySelector('{grid}').querySelectorAll('tbody tr'))
        .map(tr => tr.children[{i}].textContent)""")
    values = [float(v) for v in col if v.strip()]
    assert {0.5, 2.0, 10.0} <= set(values) and values == sorted(values, reverse=True), col
    assert col[:len(values)] == [f"{v:g}" for v in values], col  # the runs without exponents after them


# ----------------------------------------------------------------------------------------------
# the sidebar's entry picker


@pytest.mark.parametrize("size", SIZES)
def test_the_entry_picker_shows_what_tells_the_entries_apart_uncut(server, room, entries, context, size):
    page = context(**SIZES[size])
    page.goto(f"{server}/?entry={entries[0]}")
    settled(page)
    sidebar = page.locator('[data-testid=stSidebar]')
    picker = sidebar.locator('input[aria-label="Cached statistics"]')
    options = page.get_by_role("option")

    def open_list():
        for _ in range(3):  # a click that lands while the sidebar redraws focuses the box without opening it
            picker.click()
            try:
                options.first.wait_for(timeout=3_000)
                return
            except PlaywrightTimeout:
                page.keyboard.press("Escape")
        options.first.wait_for(timeout=3_000)

    open_list()
    labels = [o.strip() for o in options.all_inner_texts()]
    assert len(set(labels)) == len(entries), labels
    # the open list shows every label whole
    cut_options = page.evaluate("""() => Array.from(document.querySelectorAll('[role=option]'))
        .filter(o => o.scrollWidth > o.clientWidth + 1 || Array.from(o.querySelectorAll('*'))
            .some(e => e.scrollWidth > e.clientWidth + 1)).map(o => o.textContent)""")
    assert not cut_options, cut_options
    page.keyboard.press("Escape")
    for label in labels:
        open_list()
        page.get_by_role("option", name=label, exact=True).click()
        settled(page)
        assert picker.input_value() == label
        cut = page.evaluate(CUT, sidebar.element_handle())  # the chosen label, whole, in the box
        assert not [c for c in cut if c[0] == "Cached statistics"], cut
        # the whole description, key and all, under the picker
        key = page.evaluate("() => new URLSearchParams(location.search).get('entry')")
        assert key in entries and f"key {key}" in sidebar.inner_text().replace("\n", " ")


# ----------------------------------------------------------------------------------------------
# the Prune page's form and the Roles page's ablation panel


@pytest.mark.parametrize("present", ["", "&present=1"])
@pytest.mark.parametrize("size", SIZES)
def test_every_value_of_the_prune_form_reads_whole(server, room, context, size, present):
    page = context(**SIZES[size])
    page.goto(f"{server}/prune?entry={room['entry']}{present}")
    settled(page)
    form = page.locator('[data-testid=stVerticalBlock]').filter(
        has=page.get_by_role("button", name="Start prune + evaluate")).last
    labels = ["Method", "Sparsity type", "Calibration order", "Comparison group", "Pruned linears",
              "Bias compensation", "Layer sparsity", "Eval windows (0 = all)", "Zero-shot tasks (lm-eval)"]
    for label in labels:
        expect(form.get_by_label(label, exact=True)).to_be_visible()
    assert page.evaluate(CUT, form.element_handle()) == []
    # the longest of the method's own settings: ria calibrates layer by layer, wanda compares per row
    for method, field, own in (("ria", "Calibration order", "own: sequential"), ("wanda", "Comparison group",
                                                                               "own: per row")):
        form.get_by_label("Method", exact=True).click()
        page.get_by_role("option", name=method, exact=True).click()
        expect(form.get_by_label("Method", exact=True)).to_have_value(method)
        expect(form.get_by_label(field, exact=True)).to_have_value(own, timeout=30_000)
        settled(page)
        assert page.evaluate(CUT, form.element_handle()) == [], method


@pytest.mark.parametrize("size", SIZES)
def test_the_ablation_panel_shows_all_five_classes(server, room, context, size):
    page = context(**SIZES[size])
    page.goto(f"{server}/roles?entry={room['entry']}")
    settled(page)
    panel = page.locator('[data-testid=stVerticalBlock]').filter(
        has=page.get_by_role("button", name="Run ablation")).last
    panel.scroll_into_view_if_needed()
    chips = panel.locator('[data-testid=stMultiSelect] [data-tag]')
    assert [c.strip() for c in chips.all_inner_texts()] == ["critical", "important", "moderate", "prune-first", "dead"]
    assert page.evaluate(CUT, panel.element_handle()) == []


# ----------------------------------------------------------------------------------------------
# presentation mode: the charts' own download button


def test_presentation_mode_exports_a_chart_as_png_at_3x_and_as_svg(server, room, context):
    page = context(accept_downloads=True)
    page.goto(f"{server}/prune?entry={room['entry']}&present=1")
    settled(page)
    title = "Pruned perplexity vs sparsity"
    wait_plot(page, title)
    gd = plot(page, title)
    size = page.evaluate(f"() => {{ const gd = {gd}; gd.scrollIntoView({{block: 'center'}}); "
                         "return [gd._fullLayout.width, gd._fullLayout.height]; }")
    ticks = page.evaluate(f"() => Array.from(({gd}).querySelectorAll('.ytick text')).map(t => t.textContent)")

    def download():
        chart = page.locator(".js-plotly-plot").filter(has=page.locator(".gtitle", has_text=title))
        chart.hover()
        button = chart.locator('.modebar-btn[data-title^="Download plot"]')  # the camera
        button.wait_for(state="visible", timeout=10_000)
        with page.expect_download() as info:
            button.click()
        d = info.value
        return d.suggested_filename, open(d.path(), "rb").read()

    name, png = download()  # in the sidebar's default format
    assert name == "ppl_vs_sparsity.png" and png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (3 * size[0], 3 * size[1]), (width, height, size)

    # SVG: chosen in the sidebar (collapsed in presentation mode: the presenter opens it)
    page.locator('[data-testid=stExpandSidebarButton], [data-testid=stSidebarCollapsedControl] button').first.click()
    page.locator('[data-testid=stSidebar]').get_by_text("SVG (vector)").click()
    settled(page)
    wait_plot(page, title)
    name, svg = download()
    text = svg.decode("utf-8")
    assert name == "ppl_vs_sparsity.svg" and text.lstrip().startswith("<svg") and text.rstrip().endswith("</svg>")
    assert title in text and "dense 12.94" in text  # the title and the dense line's label, as text
    assert ticks and all(f">{t}</text>" in text for t in ticks), ticks  # the y ticks as the page shows them


# ----------------------------------------------------------------------------------------------
# a link with the search run and no study name


def test_a_link_with_only_the_search_run_opens_its_study_and_its_settings(server, room, context):
    import optuna

    from neuronrank.config.requests import SearchRequest
    from neuronrank.queue.jobs import _stored
    from neuronrank.runs.store import RunStore
    from neuronrank.search import study as search

    req = SearchRequest(**room["calib"], sparsity_type="unstructured", sparsity_ratio=0.6, trials=5, rungs=2,
                        eval="wiki", eval_seqlen=64, eval_windows=8, study="link-study")  # none of the defaults
    st = optuna.create_study(study_name="link-study", storage=search.open_storage(), direction="minimize")
    st.set_user_attr("request", search._jsonable(asdict(replace(req, storage=None))))
    st.set_user_attr("protocol", search._jsonable(req.protocol()))
    store = RunStore()
    rid = store.create("search", _stored("search", req), status="running")
    store.finish(rid, "done", result={"wall_seconds": 3.0})

    page = context()
    page.goto(f"{server}/search?entry={room['entry']}&search_run={rid}")
    settled(page)
    page.wait_for_function("() => new URLSearchParams(location.search).get('study') === 'link-study'", timeout=30_000)
    values = {label: page.get_by_role("spinbutton", name=label).input_value()
              for label in ("Sparsity ratio", "Trials", "Halving rungs", "Eval seqlen", "Eval windows (0 = all)")}
    assert values == {"Sparsity ratio": "0.60", "Trials": "5", "Halving rungs": "2", "Eval seqlen": "64",
                      "Eval windows (0 = all)": "8"}, values
    assert page.get_by_role("textbox", name="Study name (empty: derived from the settings)").input_value() == \
        "link-study"
    assert "Study link-study" in main_text(page)
