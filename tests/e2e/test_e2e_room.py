"""The run pages as a reading group sees them, in Debian Chromium (Playwright): legible from the back of the
room, the same view for everyone who opens the link, runs started elsewhere showing up in every open tab,
sweeps on the axes the user chose, and what the Search page's numbers mean.

One Streamlit server on a tiny model built from a config (the tests are about the UI, not the model), with
a cache of its own: a run history and two studies are written into its stores as the worker and Optuna
write them (the walk's numbers: 50 % runs at ppl 16–181, one 95 % run at 1.2e7, a random baseline of 5.3M),
and a few real runs are started from the page and the command line.
"""

import json
import math
import re
import os
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from bench._appserver import CHROMIUM, running_app

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.e2e,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")]

IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
PROJECTOR = dict(viewport={"width": 853, "height": 600}, device_scale_factor=1.5)  # 1280 px at 150 %


# ----------------------------------------------------------------------------------------------
# the module's cache: a tiny model's statistics, a run history, two studies


@pytest.fixture(scope="module")
def room(tmp_path_factory, isolated_cache, tiny_dir, text_file):
    cache = tmp_path_factory.mktemp("roomcache")
    old = os.environ["NEURONRANK_CACHE"]
    os.environ["NEURONRANK_CACHE"] = str(cache)
    try:
        from neuronrank.config.requests import StatsRequest
        from neuronrank.engine.statistics import get_stats

        calib = dict(model=str(tiny_dir), calib=f"file:{text_file}", nsamples=4, seqlen=16, seed=21)
        entry = get_stats(StatsRequest(**calib, batch_size=4)).entry
        history = _write_history(calib)
        _write_studies(calib)
        yield {"cache": cache, "entry": entry.key, "calib": calib, "history": history, "text": text_file}
    finally:
        os.environ["NEURONRANK_CACHE"] = old


WALK = [  # (method, type, ratio, alpha, beta, gamma, pruned ppl): the walk's comparison chart
    ("neuronrank_old", "unstructured", 0.3, 1, 1, 1, 21.0), ("neuronrank_old", "unstructured", 0.5, 1, 1, 1, 75.01),
    ("neuronrank_old", "unstructured", 0.95, 1, 1, 1, 1.2e7), ("wanda", "unstructured", 0.3, 1, 1, 1, 16.5),
    ("wanda", "unstructured", 0.5, 1, 1, 1, 28.64), ("magnitude", "unstructured", 0.3, 1, 1, 1, 25.0),
    ("magnitude", "unstructured", 0.5, 1, 1, 1, 181.08), ("random", "unstructured", 0.5, 1, 1, 1, 6.8e6),
    ("wanda", "2:4", 0.5, 1, 1, 1, 91.52), ("magnitude", "2:4", 0.5, 1, 1, 1, 700.93)]
DENSE = 12.94


def _measured(req, ppl: float, store) -> int:
    """A finished prune run as the worker stores it (its normalized request, a result with its protocol)."""
    rid = store.create("prune", asdict(req.normalized()), status="running")
    store.finish(rid, "done", result={
        "dense_ppl": DENSE, "pruned_ppl": ppl, "protocol": {"source": "wiki", "seqlen": 512, "windows": 16,
                                                             "tokens": 8176},
        "sparsity": {"mlp": req.sparsity_ratio, "attention": 0.0, "all_linear": req.sparsity_ratio / 2},
        "timings": {"load": 2.0, "stats": 0.0, "dense_eval": 6.0, "prune": 1.5, "eval": 6.7}})
    return rid


def _write_history(calib):
    from neuronrank.config.requests import PruneRequest
    from neuronrank.runs.store import RunStore

    store = RunStore()
    # the tiny model measured at seqlen 16 (what the Search page's estimate reads): 4 windows in 0.8 s. First:
    # the comparison chart shows the newest run's protocol, the walk's below
    rid = store.create("prune", asdict(PruneRequest(**calib, eval_seqlen=16, eval_windows=4).normalized()),
                       status="running")
    store.finish(rid, "done", result={"dense_ppl": 500.0, "pruned_ppl": 510.0,
                                      "protocol": {"source": "wiki", "seqlen": 16, "windows": 4, "tokens": 60},
                                      "sparsity": {"mlp": 0.5, "attention": 0.0, "all_linear": 0.25},
                                      "timings": {"load": 1.0, "eval": 0.8, "prune": 0.2}})
    ids = {}
    for method, stype, ratio, a, b, g, ppl in WALK:
        req = PruneRequest(**calib, prune_method=method, sparsity_type=stype, sparsity_ratio=ratio, alpha=a, beta=b,
                           gamma=g, eval="wiki", eval_seqlen=512, eval_windows=16)
        ids[(method, stype, ratio)] = _measured(req, ppl, store)
    return ids


TIMING = {"total": 9.0, "eval": 8.0, "overhead": 1.0, "suggest": 0.01, "prune": 0.9, "restore": 0.05,
          "between": 0.0, "windows": 16}


def _write_studies(calib):
    """Two studies as `neuronrank search` leaves them: "walk-study" (2 complete trials, 1 stopped early by
    halving, 1 running; the random baseline at 5.3M) and "walk-study-6" (6 complete)."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from neuronrank.config.requests import SearchRequest
    from neuronrank.search import study as search

    dist = {n: FloatDistribution(0.0, 3.0) for n in search.PARAMS}
    storage = search.open_storage()
    for name, trials in (("walk-study", [("complete", (1, 1, 1), 75.0), ("pruned", (2.5, 0.2, 2.9), 400.0),
                                         ("complete", (1.2, 2.2, 0.1), 45.4), ("running", (0.5, 2.0, 0.5), None)]),
                         ("walk-study-6", [("complete", (a, b, g), 40 + 10 * a + 3 * b + 20 * g)
                                           for a, b, g in ((1, 1, 1), (0.5, 2, 0), (2, 2.5, 0.5), (0.2, 1.5, 1.5),
                                                           (1.5, 0.5, 2.5), (2.8, 2.9, 0.1))])):
        req = SearchRequest(**calib, sparsity_type="unstructured", sparsity_ratio=0.5, trials=8, rungs=3,
                            eval="wiki", eval_seqlen=512, eval_windows=16, study=name)
        st = optuna.create_study(study_name=name, storage=storage, direction="minimize")
        st.set_user_attr("request", search._jsonable(asdict(replace(req, storage=None))))
        st.set_user_attr("created", time.time())
        st.set_user_attr("protocol", search._jsonable(req.protocol()))
        st.set_user_attr("baselines", {"dense": {"ppl": DENSE}, "wanda": {"ppl": 28.64}, "magnitude": {"ppl": 181.08},
                                       "random": {"ppl": 5.3e6}})
        st.set_user_attr("evaluation", {"source": "wiki", "seqlen": 512, "windows": 16, "tokens": 8176,
                                        "chunks": [4, 8, 16]})
        for state, (a, b, g), ppl in trials:
            params = {"alpha": a, "beta": b, "gamma": g}
            if state == "complete":
                st.add_trial(create_trial(params=params, distributions=dist, value=ppl,
                                          intermediate_values={4: ppl * 1.1, 8: ppl * 1.05, 16: ppl},
                                          user_attrs={"timing": TIMING, "worker": "test"}))
            elif state == "pruned":
                st.add_trial(create_trial(params=params, distributions=dist, state=TrialState.PRUNED,
                                          intermediate_values={4: ppl},
                                          user_attrs={"timing": {**TIMING, "eval": 2.0, "total": 3.0, "windows": 4},
                                                      "worker": "test"}))
            else:
                st.add_trial(create_trial(params=params, distributions=dist, state=TrialState.RUNNING,
                                          user_attrs={"worker": "test"}))


# ----------------------------------------------------------------------------------------------
# the browser


@pytest.fixture(scope="module")
def server(room):
    env = dict(os.environ, NEURONRANK_CACHE=str(room["cache"]))
    with running_app(env) as (url, _):
        yield url


@pytest.fixture
def context(browser):
    made = []

    def new(**kw):
        ctx = browser.new_context(**({"viewport": {"width": 1440, "height": 1000}} | kw))
        made.append(ctx)
        return ctx.new_page()

    yield new
    for ctx in made:
        ctx.close()


def settled(page, timeout=90_000):
    page.wait_for_selector(IDLE, timeout=timeout)
    page.wait_for_timeout(400)
    page.wait_for_selector(IDLE, timeout=timeout)


def main_text(page) -> str:
    return page.inner_text('[data-testid="stMain"]')


def plot(page, title: str) -> str:
    """JS expression: the plotly chart whose title starts with `title`."""
    return ("Array.from(document.querySelectorAll('.js-plotly-plot')).find(p => p.layout && p.layout.title && "
            f"String(p.layout.title.text || p.layout.title).replace(/<[^>]+>/g, '').startsWith({json.dumps(title)}))")


def wait_plot(page, title: str, timeout=60_000) -> None:
    page.wait_for_function(f"() => !!({plot(page, title)})", timeout=timeout)


def chart_facts(page, title: str) -> dict:
    """What the reader sees of a chart: its y tick labels and their rendered size and colour, the y range,
    each trace's name, colour, marker size and points."""
    return page.evaluate(f"""() => {{ const gd = {plot(page, title)};
        const ticks = Array.from(gd.querySelectorAll('.ytick text'));
        const xticks = Array.from(gd.querySelectorAll('.xtick text'));
        return {{yticks: ticks.map(t => t.textContent), xticks: xticks.map(t => t.textContent),
                 tick_px: ticks.length ? parseFloat(getComputedStyle(ticks[0]).fontSize) : null,
                 tick_fill: ticks.length ? getComputedStyle(ticks[0]).fill : null,
                 ytype: gd._fullLayout.yaxis.type, yrange: gd._fullLayout.yaxis.range,
                 traces: gd._fullData.map(t => ({{name: t.name, color: t.marker && t.marker.color,
                     size: t.marker && t.marker.size, symbol: t.marker && t.marker.symbol, showlegend: t.showlegend,
                     x: Array.from(t.x || []), y: Array.from(t.y || [])}}))}}; }}""")


def pick_radio(page, option: str) -> None:
    """Click a radio option as a user does (its label), in the comparison's "Sparsity type" group."""
    group = page.locator('[data-testid="stRadio"]').filter(has_text="Sparsity type")
    group.locator("label").filter(has_text=re.compile(f"^{re.escape(option)}$")).click()


def rgb(hex_or_css: str) -> tuple:
    s = hex_or_css.strip()
    if s.startswith("#"):
        return tuple(int(s[i:i + 2], 16) for i in (1, 3, 5))
    return tuple(int(float(v)) for v in s[s.index("(") + 1:s.index(")")].split(",")[:3])


ORIGINAL = "neuronrank_old · unstructured · α=1 β=1 γ=1"


# ----------------------------------------------------------------------------------------------
# legible from the back of the room


def test_the_comparison_chart_reads_from_the_back_of_the_room(server, room, context):
    from neuronrank.config.requests import PruneRequest
    from neuronrank.runs.store import RunStore
    from neuronrank.views import charts, history

    page = context()
    page.goto(f"{server}/prune?entry={room['entry']}")
    settled(page)
    wait_plot(page, "Pruned perplexity vs sparsity")
    facts = chart_facts(page, "Pruned perplexity vs sparsity")
    # 1-2-5 ticks over the runs between 16 and 181 (it read one label, "10²")
    assert {"20", "50", "100", "200"} <= set(facts["yticks"]), facts["yticks"]
    # the 1.2e7 run and random's 6.8M do not decide the axis: it ends within a decade of the 50 % points ...
    assert facts["ytype"] == "log" and facts["yrange"][1] < math.log10(2000), facts["yrange"]
    # ... they are drawn at the top edge and listed under the chart
    off = [t for t in facts["traces"] if t["symbol"] == "triangle-up"]
    assert sorted(t["name"] for t in off) == [ORIGINAL, "random · unstructured"]
    assert all(10 ** facts["yrange"][0] < y <= 10 ** facts["yrange"][1] for t in off for y in t["y"])
    text = main_text(page)
    assert "Off the scale" in text and f"{ORIGINAL} at 95%: ppl 12M" in text and "random · unstructured at 50%: ppl 6.8M" in text
    # larger markers, each series its fixed colour (the library's rule) — α=β=γ=1 blue, wanda red
    lines = {t["name"]: t for t in facts["traces"] if t["symbol"] != "triangle-up"}
    assert all(t["size"] >= 10 for t in lines.values()), lines
    for name, t in lines.items():
        method, stype = name.split(" · ")[:2]
        assert t["color"] == history.series_style(name, method, stype).color, name
    blue, red = rgb(lines[ORIGINAL]["color"]), rgb(lines["wanda · unstructured"]["color"])
    assert blue[2] > blue[0] and red[0] > red[2]
    # the value on hover: the mouse on wanda's 50 % point reads 28.64
    gd = plot(page, "Pruned perplexity vs sparsity")
    where = page.evaluate(f"""() => {{ const gd = {gd}; gd.scrollIntoView({{block: 'center'}});
        const i = gd._fullData.findIndex(t => t.name === 'wanda · unstructured' && t.marker.symbol !== 'triangle-up');
        const t = gd._fullData[i], k = Array.from(t.x).indexOf(0.5), L = gd._fullLayout;
        const r = gd.querySelector('.nsewdrag').getBoundingClientRect();
        return {{x: r.left + L.xaxis.l2p(t.x[k]), y: r.top + L.yaxis.l2p(Math.log10(t.y[k]))}}; }}""")
    page.wait_for_timeout(500)
    where = page.evaluate(f"""() => {{ const gd = {gd};
        const i = gd._fullData.findIndex(t => t.name === 'wanda · unstructured' && t.marker.symbol !== 'triangle-up');
        const t = gd._fullData[i], k = Array.from(t.x).indexOf(0.5), L = gd._fullLayout;
        const r = gd.querySelector('.nsewdrag').getBoundingClientRect();
        return {{x: r.left + L.xaxis.l2p(t.x[k]), y: r.top + L.yaxis.l2p(Math.log10(t.y[k]))}}; }}""")
    page.mouse.move(where["x"], where["y"])
    page.wait_for_selector(".hoverlayer .hovertext", timeout=10_000)
    assert "28.64" in page.evaluate("() => document.querySelector('.hoverlayer').textContent")
    # the table beside the chart: one column per sparsity
    headers = page.evaluate("""() => Array.from(document.querySelectorAll('[data-testid=stDataFrame]'))
        .map(d => Array.from(d.querySelectorAll('th')).map(t => t.textContent))""")
    assert ["series", "30 %", "50 %", "95 %"] in headers, headers

    # a new series does not move the others' colours (α=β=γ=1 once went from blue to red)
    before = {n: t["color"] for n, t in lines.items()}
    _measured(PruneRequest(**room["calib"], sparsity_ratio=0.5, alpha=1.0, beta=2.0, gamma=0.0, eval="wiki",
                           eval_seqlen=512, eval_windows=16), 45.41, RunStore())
    page.reload()
    settled(page)
    wait_plot(page, "Pruned perplexity vs sparsity")
    after = {t["name"]: t["color"] for t in chart_facts(page, "Pruned perplexity vs sparsity")["traces"]
             if t["symbol"] != "triangle-up"}
    assert len(after) == len(before) + 1 and all(after[n] == c for n, c in before.items())
    new = after["neuronrank_old · unstructured · α=1 β=2 γ=0"]
    assert new not in before.values() and new == charts.series_style("neuronrank_old", "unstructured",
                                                                     "α=1 β=2 γ=0").color

    # the filter by sparsity type: 2:4 only, and the link says so
    pick_radio(page, "2:4")
    settled(page)
    page.wait_for_function("() => location.search.includes('cmp_type=2%3A4') || location.search.includes('cmp_type=2:4')")
    names = {t["name"] for t in chart_facts(page, "Pruned perplexity vs sparsity")["traces"]}
    assert names == {"wanda · 2:4", "magnitude · 2:4"}


def test_the_history_table_shows_the_pruned_perplexity_without_scrolling(server, room, context):
    from neuronrank.views import history

    page = context(**PROJECTOR)
    page.goto(f"{server}/prune?entry={room['entry']}&present=1")
    settled(page)
    # the history (the page's first table) has drawn its header: the grid draws it after the data arrive
    page.wait_for_function("""() => { const d = document.querySelector('[data-testid=stDataFrame]');
        return d && d.querySelectorAll('th').length > 0; }""", timeout=30_000)
    table = page.evaluate("""() => { const d = document.querySelector('[data-testid=stDataFrame]');
        return {width: d.getBoundingClientRect().width, cols: Array.from(d.querySelectorAll('th')).map(t => t.textContent)}; }""")
    cols = table["cols"]
    assert "pruned_ppl" in cols, table
    upto = cols[:cols.index("pruned_ppl") + 1]
    assert len(upto) <= 7, cols
    # the leading columns' widths (set for the table) fit the table as the projector shows it
    assert sum(history.HISTORY_WIDTHS[c] for c in upto) + 2 < table["width"], (table, upto)


# ----------------------------------------------------------------------------------------------
# the same view for everyone


def test_a_shared_link_restores_filter_axis_runs_and_presentation_in_a_fresh_browser(server, room, context):
    page = context()
    page.goto(f"{server}/prune?entry={room['entry']}")
    settled(page)
    wait_plot(page, "Pruned perplexity vs sparsity")
    pick_radio(page, "unstructured")
    settled(page)
    page.get_by_text("log axis").click()
    settled(page)
    ids = room["history"]
    picked = [ids[("wanda", "unstructured", 0.5)], ids[("magnitude", "unstructured", 0.5)]]
    box = page.get_by_role("combobox", name="Compare only these runs (empty: every finished run)")
    for rid in picked:
        box.click()
        page.get_by_role("option", name=re.compile(f"^{rid}: ")).click()
        settled(page)
    page.keyboard.press("Escape")
    page.get_by_text("Presentation mode").click()
    settled(page)
    page.wait_for_function("() => location.search.includes('present=1') && location.search.includes('cmp_runs')")
    link = page.url
    mine = chart_facts(page, "Pruned perplexity vs sparsity")

    # a member of the audience opens the link in a browser of their own
    other = context()
    other.goto(link)
    settled(other)
    wait_plot(other, "Pruned perplexity vs sparsity")
    theirs = chart_facts(other, "Pruned perplexity vs sparsity")
    assert other.get_by_role("radio", name="unstructured", exact=True).is_checked()
    assert not other.get_by_label("log axis", exact=True).is_checked()
    assert theirs["ytype"] == "linear" and theirs["traces"] == mine["traces"]
    assert {t["name"] for t in theirs["traces"]} == {"wanda · unstructured", "magnitude · unstructured"}
    # presentation mode: tick labels >= 16 px in a dark colour, the sidebar collapsed
    assert theirs["tick_px"] >= 16 and sum(rgb(theirs["tick_fill"])) < 3 * 60, theirs
    sidebar = other.evaluate("() => document.querySelector('[data-testid=stSidebar]').getBoundingClientRect().right")
    assert sidebar <= 1, sidebar
    # the charts save as SVG when asked, PNG at 3x otherwise (the toolbar's camera button)
    assert other.evaluate(f"() => ({plot(other, 'Pruned perplexity vs sparsity')})._context.toImageButtonOptions.scale") == 3

    # bad values: a short notice each, never a silent reset or a traceback
    bad = context()
    bad.goto(f"{server}/prune?entry={room['entry']}&cmp_type=3:4&cmp_log=maybe&present=2&sweep=x&cmp_runs=99999")
    settled(bad)
    text = bad.inner_text("body")
    for name in ("cmp_type=3:4", "cmp_log=maybe", "present=2", "sweep=x", "cmp_runs=99999"):
        assert f"The link's {name}" in text, (name, text[:600])
    assert bad.locator('[data-testid="stException"]').count() == 0


# ----------------------------------------------------------------------------------------------
# runs started elsewhere


def _cli(room, *args) -> subprocess.Popen:
    env = dict(os.environ, NEURONRANK_CACHE=str(room["cache"]))
    c = room["calib"]
    return subprocess.Popen([sys.executable, "-m", "neuronrank", *args, "--model", c["model"], "--calib", c["calib"],
                             "--nsamples", str(c["nsamples"]), "--seqlen", str(c["seqlen"]), "--seed", str(c["seed"]),
                             "--eval", f"file:{room['text']}", "--eval-seqlen", "16", "--eval-windows", "8"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _created(kind: str, before: int, timeout=60) -> dict:
    from neuronrank.runs.store import RunStore

    deadline = time.time() + timeout
    while time.time() < deadline:
        runs = [r for r in RunStore().list(kind=kind, limit=5) if r["id"] > before]
        if runs:
            return runs[-1]
        time.sleep(0.1)
    raise AssertionError(f"no {kind} run appeared")


def test_open_pages_show_runs_started_from_the_command_line(server, room, context):
    """Tabs opened before the runs existed (nothing active when they loaded) show them within seconds."""
    sys.path.insert(0, str(REPO))
    import ui  # the app's module: only its WATCH_SECONDS is read (no streamlit run starts)

    from neuronrank.runs.store import RunStore

    prune_tab, search_tab = context(), context()
    prune_tab.goto(f"{server}/prune?entry={room['entry']}")
    search_tab.goto(f"{server}/search?entry={room['entry']}")
    settled(prune_tab)
    settled(search_tab)
    before = max(r["id"] for r in RunStore().list(limit=1))
    proc = _cli(room, "prune", "--prune_method", "magnitude", "--sparsity_type", "unstructured",
                "--sparsity_ratio", "0.42")
    run = _created("prune", before)
    t0 = time.time()
    # the run shows in the tab: in the "also active" box while it runs, in the chart once done
    prune_tab.wait_for_function(
        f"""() => document.querySelector('[data-testid=stMain]').innerText.includes('Run {run["id"]} ·') ||
            Array.from(document.querySelectorAll('.js-plotly-plot')).some(p => (p.data || []).some(
                t => (t.x || []).includes(0.42)))""", timeout=30_000)
    seen = time.time() - t0
    assert proc.wait(120) == 0
    assert seen < ui.WATCH_SECONDS + 4, seen  # one look, then the page's rerun
    # once finished, its point is in the comparison chart (no reload)
    prune_tab.wait_for_function("""() => Array.from(document.querySelectorAll('.js-plotly-plot')).some(p =>
        (p.data || []).some(t => (t.x || []).includes(0.42)))""", timeout=30_000)

    # a study started from the command line: the Search tab follows it
    proc = _cli(room, "search", "--prune_method", "neuronrank_old", "--sparsity_type", "unstructured",
                "--sparsity_ratio", "0.5", "--trials", "2", "--rungs", "1", "--study", "cli-study")
    _created("search", run["id"])
    t0 = time.time()
    # followed while it runs ("Study cli-study", "Also active"), or — a two-trial study on the tiny model can
    # end within one look — listed under past studies after the look that saw it end
    search_tab.wait_for_function("""() => /Study cli-study|Also active|cli-study/.test(
        document.querySelector('[data-testid=stMain]').innerText)""", timeout=30_000)
    seen = time.time() - t0
    assert proc.wait(180) == 0
    assert seen < ui.WATCH_SECONDS + 4, seen  # one look, then the page's rerun
    search_tab.wait_for_function("() => location.search.includes('study=cli-study')", timeout=10_000)
    wait_plot(search_tab, "Optimization history", timeout=60_000)


SCRIPT_RUNS = """() => { const app = document.querySelector('[data-testid=stApp]'); window.__runs = 0;
    new MutationObserver((recs) => { for (const r of recs) if (r.oldValue === 'running') window.__runs++; })
      .observe(app, {attributes: true, attributeOldValue: true, attributeFilter: ['data-test-script-state']}); }"""


def test_a_run_started_in_one_browser_shows_in_another_browsers_open_tabs(server, room, context):
    """The audience's tabs (their own browser context, opened before the run existed) show a run the presenter
    starts from the app within seconds — and while nothing happens their tabs run no script: the tab polls the
    run store's change stamp (a file GET), not the server's script."""
    sys.path.insert(0, str(REPO))
    import ui

    from neuronrank.runs.store import RunStore

    watchers = {name: context() for name in ("prune", "search")}
    for name, tab in watchers.items():
        tab.goto(f"{server}/{name}?entry={room['entry']}")
        settled(tab)
        tab.evaluate(SCRIPT_RUNS)
    time.sleep(3 * ui.WATCH_SECONDS + 1)  # idle: several looks at the stamp, no script run
    for name, tab in watchers.items():
        assert tab.evaluate("window.__runs") == 0, name
        assert tab.evaluate("window.__nr.watch.looks") >= 2, name  # it did look
    presenter = context()
    presenter.goto(f"{server}/prune?entry={room['entry']}&sparsity=0.37")
    settled(presenter)
    presenter.get_by_role("textbox", name="Evaluation text").fill(f"file:{room['text']}")
    presenter.keyboard.press("Tab")
    settled(presenter)
    presenter.get_by_role("spinbutton", name="Eval seqlen").fill("16")
    presenter.keyboard.press("Tab")
    settled(presenter)
    before = max(r["id"] for r in RunStore().list(limit=1))
    presenter.get_by_role("button", name="Start prune + evaluate").click()
    run = _created("prune", before)
    assert run["params"]["sparsity_ratio"] == 0.37
    t0 = time.time()
    # the audience's Prune tab: the run in its "also active" box while it runs, its point in the chart once done
    watchers["prune"].wait_for_function(
        f"""() => document.querySelector('[data-testid=stMain]').innerText.includes('Run {run["id"]} ·') ||
            Array.from(document.querySelectorAll('.js-plotly-plot')).some(p => (p.data || []).some(
                t => (t.x || []).includes(0.37)))""", timeout=30_000)
    seen = time.time() - t0
    assert seen < ui.WATCH_SECONDS + 4, seen  # one look, then the page's rerun
    deadline = time.time() + 120
    while RunStore().get(run["id"])["status"] in ("queued", "running") and time.time() < deadline:
        time.sleep(0.3)
    assert RunStore().get(run["id"])["status"] == "done", RunStore().get(run["id"])["error"]
    watchers["prune"].wait_for_function("""() => Array.from(document.querySelectorAll('.js-plotly-plot')).some(p =>
        (p.data || []).some(t => (t.x || []).includes(0.37)))""", timeout=30_000)
    # the Search tab heard the change too (the stamp is the store's), looked, and — not its kind — drew nothing new
    assert watchers["search"].evaluate("window.__nr.watch.looks") >= 2
    assert "Run " + str(run["id"]) + " ·" not in main_text(watchers["search"])


# ----------------------------------------------------------------------------------------------
# a sweep on the chosen axes, reusing a measured cell


def test_a_sweep_draws_the_chosen_axes_and_reuses_a_measured_cell(server, room, context):
    from neuronrank.runs.store import RunStore

    page = context()
    page.goto(f"{server}/prune?entry={room['entry']}")
    settled(page)
    page.get_by_role("textbox", name="Evaluation text").fill(f"file:{room['text']}")
    page.keyboard.press("Tab")
    settled(page)
    page.get_by_role("spinbutton", name="Eval seqlen").fill("16")
    page.keyboard.press("Tab")
    settled(page)
    page.get_by_role("spinbutton", name="Eval windows (0 = all)").fill("4")
    page.keyboard.press("Tab")
    settled(page)
    page.get_by_role("button", name="Start prune + evaluate").click()  # α = β = γ = 1
    page.wait_for_url("**run=*", timeout=30_000)
    from urllib.parse import parse_qs, urlparse

    first = int(parse_qs(urlparse(page.url).query)["run"][0])
    store = RunStore()
    deadline = time.time() + 120
    while store.get(first)["status"] not in ("done", "failed") and time.time() < deadline:
        time.sleep(0.3)
    assert store.get(first)["status"] == "done", store.get(first)["error"]
    settled(page)
    n_before = len(store.list(kind="prune", limit=1000))
    # x = α with one value, y = γ with two: the old page drew γ on x (it re-inferred the axes)
    page.get_by_role("textbox", name="x values").fill("1")
    page.get_by_role("textbox", name="y values").fill("0, 1")
    page.get_by_role("button", name="Queue sweep").click()
    settled(page)
    text = main_text(page)
    assert "1 of them already measured by identical runs" in text, text[text.find("Exponent landscape"):]
    added = store.list(kind="prune", limit=1000)[:len(store.list(kind="prune", limit=1000)) - n_before]
    sweep_runs = [r for r in added if str(r.get("grp") or "").startswith("sweep-")]
    assert len(sweep_runs) == 1 and sweep_runs[0]["params"]["gamma"] == 0.0  # only the unmeasured cell
    deadline = time.time() + 180
    while any(r["status"] in ("queued", "running") for r in store.get_many([r["id"] for r in added])) \
            and time.time() < deadline:
        time.sleep(0.5)
    page.wait_for_function(f"() => !!({plot(page, 'Pruned perplexity, unstructured')}) && "
                           f"({plot(page, 'Pruned perplexity, unstructured')}).data[0].z.flat().every(v => v !== null)",
                           timeout=60_000)
    heat = page.evaluate(f"""() => {{ const gd = {plot(page, 'Pruned perplexity, unstructured')};
        return {{x: Array.from(gd.data[0].x), y: Array.from(gd.data[0].y), xt: gd._fullLayout.xaxis.title.text,
                 yt: gd._fullLayout.yaxis.title.text, title: gd.layout.title.text}}; }}""")
    assert heat["x"] == ["1"] and heat["y"] == ["0", "1"], heat
    assert heat["xt"].startswith("α") and heat["yt"].startswith("γ"), heat
    assert "at alpha=1, gamma=" in heat["title"]
    assert f"1 cell(s) reuse identical earlier runs ({first})" in main_text(page)
    # the link names the sweep: a fresh browser opens on it
    group = sweep_runs[0]["grp"]
    assert f"sweep={group}" in page.url
    other = context()
    other.goto(page.url)
    settled(other)
    assert other.locator('input[aria-label="Sweep"]').input_value().startswith(group)


# ----------------------------------------------------------------------------------------------
# the Search page: plots that say what they mean, estimates, the followed study's settings


def test_search_plots_of_a_study(server, room, context):
    from neuronrank.views import charts

    page = context()
    page.goto(f"{server}/search?entry={room['entry']}&study=walk-study")
    settled(page)
    wait_plot(page, "Optimization history")
    facts = chart_facts(page, "Optimization history")
    # random's 5.3M does not set the scale: the trials and the wanda line fill the chart
    assert facts["yrange"][1] < math.log10(5000), facts["yrange"]
    text = main_text(page)
    assert "random baseline" in text and "Off the scale" in text
    # the stopped-early trial is drawn, with its own marker; trials are whole numbers
    stopped = [t for t in facts["traces"] if t["name"] == "stopped early (halving)"]
    assert stopped and stopped[0]["x"] == [1] and stopped[0]["y"] == [400.0] and stopped[0]["symbol"] == "circle-open"
    assert facts["xticks"] and all(t.lstrip("−-").isdigit() for t in facts["xticks"]), facts["xticks"]
    # the baselines are the Prune page's colours (one colour per method on every page)
    shapes = page.evaluate(f"() => ({plot(page, 'Optimization history')}).layout.shapes.map(s => s.line.color)")
    assert charts.method_color("wanda") in shapes and charts.method_color("magnitude") in shapes
    # halving says its windows; the importances of 2 trials are not shown as a finding
    assert "halving after 4 and 8 of 16 windows" in text and "None" not in text.split("Past studies")[0]
    assert "Parameter importances need at least" in text and not page.evaluate(
        f"() => !!({plot(page, 'Parameter importances')})")
    # trial 0 is visible in the slice plot (it was white on white)
    wait_plot(page, "Slice")
    fills = page.evaluate(f"""() => Array.from(({plot(page, 'Slice')}).querySelectorAll('.points path'))
        .map(p => getComputedStyle(p).fill)""")
    assert fills and all(sum(rgb(f)) < 3 * 235 for f in fills), fills
    # time left while a trial runs: measured from this study's own trials
    assert "Time left: about" in text and "5 trial(s) left" in text and "measured trial(s) of this study" in text

    page.goto(f"{server}/search?entry={room['entry']}&study=walk-study-6")
    settled(page)
    wait_plot(page, "Parameter importances")
    fit = page.evaluate(f"""() => {{ const gd = {plot(page, 'Parameter importances')};
        const area = gd.querySelector('.nsewdrag').getBoundingClientRect();  // the plot area
        return Array.from(gd.querySelectorAll('.bartext')).map(t => {{
            const r = t.getBoundingClientRect(); return [t.textContent, r.right <= area.right + 0.5]; }}); }}""")
    assert fit and all(inside for _, inside in fit), fit  # the label "0.50" is not clipped
    assert "rough guide" in main_text(page)


def test_search_estimate_before_and_the_followed_studys_settings_after_a_reload(server, room, context):
    page = context()
    page.goto(f"{server}/search?entry={room['entry']}")
    settled(page)
    page.get_by_role("textbox", name="Evaluation text").fill(f"file:{room['text']}")
    page.keyboard.press("Tab")
    settled(page)
    for label, value in (("Eval seqlen", "16"), ("Eval windows (0 = all)", "4"), ("Trials", "3"),
                         ("Halving rungs", "1")):
        page.get_by_role("spinbutton", name=label).fill(value)
        page.keyboard.press("Tab")
        settled(page)
    # an estimate before the study, from what was measured at seqlen 16 on this model (the CLI study of an
    # earlier test, else the prune run in the history); the numbers are views.studies' (unit-tested)
    text = main_text(page)
    assert re.search(r"Estimated time for 3 trials of 4 windows, with loading and the 4 baselines: about \d+", text)
    assert "cli-study" in text or "prune runs at seqlen 16" in text, text
    page.get_by_role("textbox", name="Study name (empty: derived from the settings)").fill("page-study")
    page.keyboard.press("Tab")
    settled(page)
    page.get_by_role("button", name="Start search").click()
    # the run id and the study name reach the URL one after the other: reload once both are there
    page.wait_for_function("() => location.search.includes('search_run=') && location.search.includes('study=')",
                           timeout=30_000)
    page.reload()  # a reload (or a colleague's tab) shows the study's settings, not the defaults
    settled(page)
    values = {label: page.get_by_role("spinbutton", name=label).input_value()
              for label in ("Eval seqlen", "Eval windows (0 = all)", "Trials", "Halving rungs")}
    assert values == {"Eval seqlen": "16", "Eval windows (0 = all)": "4", "Trials": "3", "Halving rungs": "1"}
    assert page.get_by_role("textbox", name="Study name (empty: derived from the settings)").input_value() == \
        "page-study"
    page.wait_for_selector('text=/Search run \\d+ done/', timeout=180_000)
