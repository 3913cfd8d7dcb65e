"""Streamlit glue shared by app.py and the pages: the sidebar, cached loading, session state that
outlives a page, following a run, charts and tables with downloads, and the error boundary.

Computation lives in `neuronrank.views` (tested without streamlit); this module only arranges it.
The app process never loads a model: statistics are computed by `neuronrank.queue.jobs` workers, and the
Roles page loads a tokenizer only.
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import Callable, Iterator

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from neuronrank import UserError
from neuronrank.analysis.numbers import ppl_text
from neuronrank.analysis.neuron_stats import SITES
from neuronrank.config import requests
from neuronrank.config.fields import spec
from neuronrank.config.requests import StatsRequest
from neuronrank.data import inputs, specs
from neuronrank.data import stats_cache as store
from neuronrank.queue import jobs
from neuronrank.runs.progress import stage_progress
from neuronrank.runs import store as run_store
from neuronrank.runs.store import RunStore
from neuronrank.views import charts, entries, explorer
from neuronrank.views.display import URL_NUMBERS, plain, url_text, url_value

CALIB_CHOICES = (*requests.TEXT_SOURCES, "file:PATH")
# Exponents and sparsity chosen on the Exponents page; read by later pages (Prune & evaluate).
# Widgets use the "_"-prefixed keys: Streamlit drops a widget's state on runs where the widget is
# not drawn (another page), the plain keys are ordinary state and survive page switches.
EXPONENT_DEFAULTS = {"alpha": 1.0, "beta": 1.0, "gamma": 1.0, "sparsity": 0.5}
PLOTLY_CONFIG = {"displaylogo": False}


# ----------------------------------------------------------------------------------------------
# errors


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Show a library UserError (or a damaged cache entry) as a message, never a traceback."""
    try:
        yield
    except store.CorruptEntry as e:
        # verified on load (sha256): damaged numbers are never shown; the entry goes, to be recomputed
        with contextlib.suppress(UserError, OSError):
            store.delete_entry(e.key, missing_ok=True)
        st.error(f"The cache entry was damaged ({plain(e)}) and has been removed: compute the statistics again.")
    except UserError as e:
        st.error(plain(requests.app_message(e)))  # messages quote what the user typed: shown as text


def safe_entries() -> list[store.Entry]:
    """The cache entries, newest first; re-listed only when the stats folder changes.

    Adding or deleting an entry renames a folder inside the stats folder, which updates its mtime:
    keying the listing on it means a rerun (a slider move) costs one stat() and reads no file.
    """
    try:
        root = store.stats_root()
        return _list_entries(str(root), root.stat().st_mtime_ns if root.is_dir() else 0)
    except UserError as e:
        st.error(plain(e))
        return []


@st.cache_data(max_entries=8, show_spinner=False)
def _list_entries(root: str, mtime_ns: int) -> list[store.Entry]:
    return store.list_entries()


# ----------------------------------------------------------------------------------------------
# cached loading: keyed by entry key and creation time (a recomputed entry is a new one)


@st.cache_data(max_entries=4, show_spinner="Loading statistics…")
def load_entry(key: str, created: float) -> entries.EntryData:
    entry = store.get_entry(key)
    return entries.entry_data(key, store.load_stats(entry), entry.params)


@st.cache_data(max_entries=4, show_spinner=False)
def neuron_arrays(key: str, created: float) -> dict:
    return explorer.neuron_arrays(load_entry(key, created).frame)


@st.cache_data(max_entries=4, show_spinner=False)
def layer_overview(key: str, created: float) -> dict[str, pd.DataFrame]:
    frame = load_entry(key, created).frame
    layers = frame["layer"].to_numpy()
    out = {c: entries.layer_quantiles(frame[c].to_numpy(), layers) for c in ("tf", "idf", "w_norm")}
    out["summary"] = entries.layer_summary(frame)
    return out


@st.cache_resource(show_spinner="Loading the tokenizer…", max_entries=4)
def tokenizer(spec: str):
    """A model's tokenizer only (never its weights); shared read-only between sessions."""
    from transformers import AutoTokenizer

    source, kwargs = specs.tokenizer_source(spec)
    try:
        return AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"cannot load the tokenizer of {spec!r}: {str(e).splitlines()[0] if str(e) else e}") from e


def require_entry() -> tuple[store.Entry, entries.EntryData]:
    """The loaded entry, or a message and the end of the page."""
    key = st.session_state.get("entry_key")
    if not key:
        st.info("No statistics loaded yet. Compute them on the **Statistics** page, or pick a cached entry "
                "in the sidebar.")
        st.stop()
    entry = next((e for e in safe_entries() if e.key == key), None)
    if entry is None:
        st.info(f"The statistics entry {plain(key)} is no longer in the cache: pick another one in the sidebar.")
        st.stop()
    with user_errors():
        return entry, load_entry(key, entry.created)
    st.stop()  # the error is shown; st.stop raises
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------------------------
# navigation and the shared sidebar


def select_entry(key: str | None) -> None:
    """Make `key` the loaded entry (call from a callback, or before st.rerun())."""
    st.session_state["entry_key"] = key


def _on_pick() -> None:
    select_entry(st.session_state.get("_entry_select"))


def pages() -> list:
    """The app's pages, in navigation order (app.py passes them to st.navigation)."""
    return [
        st.Page("app_pages/1_statistics.py", title="Statistics", icon=":material/bar_chart:", default=True),
        st.Page("app_pages/2_exponents.py", title="Exponents", icon=":material/tune:"),
        st.Page("app_pages/3_roles.py", title="Roles", icon=":material/grid_view:"),
        st.Page("app_pages/4_prune.py", title="Prune & evaluate", icon=":material/content_cut:"),
        st.Page("app_pages/5_search.py", title="Search", icon=":material/travel_explore:"),
        st.Page("app_pages/6_compare.py", title="Compare", icon=":material/compare_arrows:"),
    ]


_run = threading.local()  # per session thread: did app.py draw the sidebar in this run?


@contextlib.contextmanager
def pages_of_app() -> Iterator[None]:
    """app.py runs the chosen page inside this, after drawing the sidebar."""
    _run.sidebar_drawn = True
    try:
        yield
    finally:
        _run.sidebar_drawn = False


def page_setup() -> None:
    """First call of every page: does app.py's part when app.py did not run (AppTest runs a page file
    directly after switch_page).

    The pages live in app_pages/, not pages/: with a pages/ folder Streamlit ran a page file directly,
    without app.py, on the first run after a server start that opened on a page URL (a shared link),
    and a chart's selection event from that run was lost on the next run — the first click on the
    Roles scatter did nothing.
    """
    if not getattr(_run, "sidebar_drawn", False):
        page_config()
        st.navigation(pages())
        sidebar()
    url_note()  # on whichever page a shared link opened


def page_config() -> None:
    """st.set_page_config for every run (app.py calls it first): wide, and the sidebar collapsed in
    presentation mode (read from the URL on a session's first run, before the sidebar restores the rest)."""
    if "present" not in st.session_state:
        st.session_state["present"] = _url_flag("present")
    st.set_page_config(layout="wide", page_title="NeuronRank Studio",
                       initial_sidebar_state="collapsed" if presentation_mode() else "auto")


def _url_flag(name: str) -> bool:
    raw = st.query_params.get(name)
    if raw is None:
        return False
    try:
        return bool(url_value(name, raw))
    except UserError as e:
        st.session_state["_url_note"] = " ".join(filter(None, [st.session_state.get("_url_note"), str(e)]))
        del st.query_params[name]
        return False


def sidebar() -> None:
    with st.sidebar:
        _presentation_controls()
        cached = safe_entries()
        restore_from_url(cached)
        _entry_picker(cached)
        st.divider()
        _stats_params(cached)
    write_url()


# ----------------------------------------------------------------------------------------------
# the view in the URL: a shared link restores the page, the statistics entry and the exponents

def url_param(name: str):
    """Query parameter `name`, checked (views.display.url_value) before anything uses it; a bad one is
    dropped from the URL with a short notice (as text: the URL is anyone's), never a traceback."""
    raw = st.query_params.get(name)
    if raw is None:
        return None
    try:
        return url_value(name, raw)
    except UserError as e:
        del st.query_params[name]
        st.warning(plain(e))
        return None


def restore_from_url(cached: list[store.Entry]) -> None:
    """Once per browser session: take `entry`, `alpha`, `beta`, `gamma`, `sparsity` from the URL."""
    if st.session_state.get("_url_restored"):
        return
    st.session_state["_url_restored"] = True
    qp = st.query_params
    notes = []
    for name in ("entry", *URL_NUMBERS):
        raw = qp.get(name)
        if raw is None or (name == "entry" and not raw):
            continue
        try:
            value = url_value(name, raw)
        except UserError as e:
            notes.append(str(e))
            continue
        if name == "entry":
            if value in {e.key for e in cached}:
                select_entry(value)
            else:
                notes.append(f"The link names statistics entry {value}, which is not in this cache.")
        else:
            st.session_state[name] = value
            st.session_state[f"_{name}"] = value
    if notes:
        st.session_state["_url_note"] = " ".join(filter(None, [st.session_state.get("_url_note"), *notes]))


def restore_page_url(page: str, names, apply: Callable[[str, object], str | None]) -> None:
    """Once per browser session and page: the page's own query parameters (`names`) from the URL. Each is
    checked by views.display.url_value, then `apply(name, value)` puts it into session state — or returns a
    notice (e.g. a layer this entry does not have). Bad values get a short notice, as text; never a reset
    without a word, never a traceback."""
    flag = f"_url_restored_{page}"
    if st.session_state.get(flag):
        return
    st.session_state[flag] = True
    for name in names:
        raw = st.query_params.get(name)
        if raw is None:
            continue
        try:
            note = apply(name, url_value(name, raw))
        except UserError as e:
            note = str(e)
        if note:
            st.warning(plain(note))


def write_page_url(values: dict[str, str | None]) -> None:
    """The page's own query parameters = what the page shows (None removes one); only changes are written."""
    for k, v in values.items():
        if v is None:
            if k in st.query_params:
                del st.query_params[k]
        elif st.query_params.get(k) != v:
            st.query_params[k] = v


def write_url() -> None:
    """Keep the URL equal to the view (only changed values are written: each write is a browser update)."""
    want = {"entry": st.session_state.get("entry_key"), "present": "1" if presentation_mode() else None}
    for name, default in EXPONENT_DEFAULTS.items():
        want[name] = f"{float(st.session_state.get(name, default)):g}"
    write_page_url(want)


# ----------------------------------------------------------------------------------------------
# presentation mode: legible from the back of the room, on every page


def presentation_mode() -> bool:
    """Charts for a projector: tick labels ≥ 16 px in a dark colour, titles and legends to match, the sidebar
    collapsed. Set by the sidebar's toggle or the link's `present=1`; every chart drawn through `chart()`
    follows it, and components that draw their own charts read it here (and `chart_style()`)."""
    return bool(st.session_state.get("present", False))


def chart_style() -> dict:
    """The plotly fonts of the current mode (views.charts.layout_style): for charts drawn outside `chart()`."""
    return charts.layout_style(presentation_mode())


def _on_present() -> None:
    st.session_state["present"] = bool(st.session_state.get("_present"))


EXPORT_FORMATS = {"png": "PNG (3× resolution)", "svg": "SVG (vector)"}


def _presentation_controls() -> None:
    st.session_state["_present"] = presentation_mode()
    st.toggle("Presentation mode", key="_present", on_change=_on_present,
              help="Large dark chart labels for a projector, the sidebar collapsed; the link carries it "
                   "(present=1), so everyone who opens it sees the same.")
    st.session_state.setdefault("_export", "png")
    st.radio("Charts download as", list(EXPORT_FORMATS), format_func=EXPORT_FORMATS.get, key="_export",
             horizontal=True, help="The camera button in each chart's toolbar saves it in this format")
    st.divider()


# ----------------------------------------------------------------------------------------------
# a page's controls in the URL: a shared link restores them


def _url_keys(name: str) -> tuple[str, str]:
    """Session keys of a URL control: its value (kept across page switches) and its widget's key."""
    return f"url:{name}", f"_url:{name}"


def url_state(name: str, default, allowed=None) -> str:
    """The widget key of a control whose value lives in the URL as `name`. On the session's first look, the
    link's value (checked by views.display.url_value; a bad one is a short notice, never a silent reset)
    or `default`; later the session's (it survives page switches). `allowed`: the values the widget offers
    now — a link naming another one gets a notice too. Call `url_keep(name, default)` after the widget."""
    key, widget = _url_keys(name)
    if key not in st.session_state:
        value = url_param(name)
        if value is not None and allowed is not None:
            bad = [v for v in (value if isinstance(value, list) else [value]) if v not in allowed]
            if bad:
                st.warning(plain(f"The link's {name}={', '.join(str(b) for b in bad)} is not on this page now; "
                                 "it was ignored."))
                value = [v for v in value if v in allowed] if isinstance(value, list) else None
        st.session_state[key] = default if value is None else value
    if widget not in st.session_state:  # first drawn in this session, or after a page switch dropped it
        st.session_state[widget] = st.session_state[key]
    if allowed is not None:  # the widget must hold an offered value (a run deleted, a sweep gone)
        v = st.session_state[widget]
        fixed = [x for x in v if x in allowed] if isinstance(v, list) else (v if v in allowed else default)
        if fixed != v:
            st.session_state[widget] = fixed
    return widget


def url_set(name: str, value) -> None:
    """Set a URL control's value before its widget is drawn (a callback, or code above the widget)."""
    key, widget = _url_keys(name)
    st.session_state[key] = st.session_state[widget] = value


def url_keep(name: str, default=None, always: bool = False):
    """After the widget of `url_state(name, ...)`: keep its value for the session and in the URL (left out
    while it is `default`, unless `always`). Returns the value."""
    key, widget = _url_keys(name)
    value = st.session_state.get(widget)
    st.session_state[key] = value
    text = None if value is None or (value == default and not always) else url_text(value)
    if text in (None, ""):
        st.query_params.pop(name, None)
    elif st.query_params.get(name) != text:
        st.query_params[name] = text
    return value


def _entry_picker(cached: list[store.Entry]) -> None:
    st.subheader("Statistics entry")
    by_key = {e.key: e for e in cached}
    key = st.session_state.get("entry_key")
    if key not in by_key:  # none chosen yet, or deleted: the newest entry
        key = cached[0].key if cached else None
        select_entry(key)
    # the selectbox follows entry_key when a page changed it (a finished run, "Load selected");
    # set before the widget is drawn, which Streamlit allows
    if st.session_state.get("_entry_select") != key:
        st.session_state["_entry_select"] = key
    labels = entries.entry_labels(cached)  # what tells the entries apart first: the sidebar is narrow
    st.selectbox("Cached statistics", list(by_key), key="_entry_select", on_change=_on_pick,
                 format_func=labels.get, placeholder="none yet",
                 help="Each entry is named by what differs between the cached entries (model, calibration "
                      "text, nsamples×seqlen windows, activation site, seed, …); the loaded one is described "
                      "in full below.")
    if key:
        st.success(f"loaded: {plain(entries.entry_description(by_key[key]))}")
    else:
        st.info("No statistics cached yet: compute them on the Statistics page.")


def _stats_params(cached: list[store.Entry]) -> None:
    """The calibration fields of new statistics: model, text and site, then a number input per numeric field
    (its label, bounds, default and help from the field's declaration)."""
    st.subheader("Parameters for new statistics")
    f = lambda name: spec(StatsRequest, name)  # noqa: E731  (defaults, bounds, help)
    model = st.text_input(f("model").label, value=f("model").default, key="sb_model",
                          help="`smollm2-135m` (embedded), a Hugging Face id, a local model folder or a .gguf file")
    problems = [model_problem(model)]  # checked as typed: a typo must not wait in the queue to fail
    if problems[-1]:
        st.error(plain(problems[-1]))
    calib = st.selectbox(f("calib").label, CALIB_CHOICES, key="sb_calib",
                         help="news: BBC news (offline); wiki: Wikipedia leads (offline); wikitext2 and c4 need "
                              "a network or a local datasets cache")
    if calib == "file:PATH":
        calib = "file:" + st.text_input("Text file (.txt, .jsonl, .parquet)", key="sb_calib_file").strip()
        problems.append(source_problem(calib, "calib"))
        if problems[-1]:
            st.error(plain(problems[-1]))
    site = st.selectbox(f("site").label, list(f("site").choices), key="sb_site", help="\n\n".join(
        f"`{k}`: {v}" for k, v in SITES.items()))
    params = dict(model=model.strip(), calib=calib, site=site)
    numeric = [name for name in entries.STATS_PARAM_NAMES if name not in params]
    for pair in (numeric[i:i + 2] for i in range(0, len(numeric), 2)):
        for col, name in zip(st.columns(2), pair):
            s = f(name)
            params[name] = type(s.default)(col.number_input(
                s.label, s.lo, s.hi if s.hi is not None else SIDEBAR_MAX, value=s.default, key=f"sb_{name}",
                help=s.help))
    params = {name: params[name] for name in entries.STATS_PARAM_NAMES}  # the fields' own order
    st.session_state["stats_params"] = params
    st.session_state["stats_params_problem"] = next((p for p in problems if p), None)  # Compute stays off
    matches = entries.matching_entries(cached, params)
    if matches and matches[0] == st.session_state.get("entry_key"):
        st.caption("These parameters are the loaded entry.")
    elif matches:
        st.button("Load the cached entry for these parameters", on_click=select_entry, args=(matches[0],))
    else:
        st.caption("Not computed yet: **Compute statistics** on the Statistics page.")


SIDEBAR_MAX = 1_000_000  # a number input's upper end where the field declares none


# ----------------------------------------------------------------------------------------------
# state shared between pages


def init_exponent_widgets() -> None:
    for name, default in EXPONENT_DEFAULTS.items():
        if f"_{name}" not in st.session_state:
            st.session_state[f"_{name}"] = float(st.session_state.get(name, default))


def keep_exponents() -> dict[str, float]:
    chosen = {name: float(st.session_state[f"_{name}"]) for name in EXPONENT_DEFAULTS}
    st.session_state.update(chosen)
    write_url()
    return chosen


def apply_preset(alpha: float, beta: float, gamma: float, sparsity: float | None = None) -> None:
    st.session_state.update(_alpha=alpha, _beta=beta, _gamma=gamma)
    if sparsity is not None:
        st.session_state["_sparsity"] = sparsity


def persisted(name: str, default):
    """A widget value that outlives the page: the widget uses key `_name`, and `name` keeps a copy in
    plain session state (Streamlit drops a widget's own state on runs where it is not drawn)."""
    if f"_{name}" not in st.session_state:
        st.session_state[f"_{name}"] = st.session_state.get(name, default)
    return f"_{name}"


def relabel(widget_key: str) -> str:
    """The key of a selectbox whose option labels follow another widget ("own: sequential" once the method is
    ria): Streamlit keeps showing a keyed selectbox's old label ("own: one-pass") unless its value is set from
    Python in the run that changes the labels — so it is set, unchanged, on every run."""
    st.session_state[widget_key] = st.session_state.get(widget_key)
    return widget_key


def keep(name: str):
    st.session_state[name] = st.session_state.get(f"_{name}")
    return st.session_state[name]


SLIDER_MAX = 3.0  # the Exponents page's slider range is [0, SLIDER_MAX]


def apply_exponents(alpha: float, beta: float, gamma: float, sparsity: float | None = None) -> list[str]:
    """Set the Exponents sliders and the shared exponents (and sparsity) — a callback, e.g. "apply best".
    Values beyond the sliders' range are clipped; returns the names that were."""
    clipped, values = [], {}
    wanted = {"alpha": alpha, "beta": beta, "gamma": gamma}
    if sparsity is not None:
        wanted["sparsity"] = sparsity
    for name, v in wanted.items():
        top = 0.95 if name == "sparsity" else SLIDER_MAX
        values[name] = round(min(max(float(v), 0.0), top), 3)
        if values[name] != round(float(v), 3):
            clipped.append(name)
    st.session_state.update(values)
    st.session_state.update({f"_{k}": v for k, v in values.items()})
    return clipped


def calibration() -> tuple[dict, int | None]:
    """The loaded statistics entry's calibration (a run then uses the statistics being explored), else the
    sidebar's parameters for new statistics -> (parameters, the entry's layer count or None)."""
    key = st.session_state.get("entry_key")
    if key:
        try:
            entry = store.get_entry(key)
            return entries.stats_params_of(entry.params), int(entry.manifest.get("shape", [0])[0]) or None
        except UserError:
            pass
    return entries.stats_params_of(st.session_state.get("stats_params", {})), None


def exponents() -> dict[str, float]:
    """The chosen exponents and sparsity, for pages that only read them."""
    return {k: float(st.session_state.get(k, v)) for k, v in EXPONENT_DEFAULTS.items()}


# ----------------------------------------------------------------------------------------------
# output with downloads


def chart(fig: go.Figure, name: str, **kwargs):
    """Every plotly chart of the app: the fonts of the current mode (presentation mode: ≥ 16 px tick labels
    in a dark colour, titles and legends to match), and a toolbar that saves it as a 3× PNG or an SVG
    named after the chart."""
    style = chart_style()
    fig.update_layout(**style["layout"])
    fig.update_xaxes(**style["axis"])
    fig.update_yaxes(**style["axis"])
    fig.update_annotations(font_size=style["tick_px"])
    for trace in fig.data:
        if "colorbar" in trace:  # heatmaps, contours, coloured markers
            trace.update(colorbar=style["colorbar"])
        elif "marker" in trace and getattr(trace.marker, "colorbar", None) is not None and trace.marker.showscale:
            trace.marker.update(colorbar=style["colorbar"])
    top = 60 if fig.layout.title.text else 20
    # margins the figure sets are kept (a legend under the axis, room for a label beside the plot)
    m = fig.layout.margin
    fig.update_layout(margin=dict(l=10 if m.l is None else m.l, r=10 if m.r is None else m.r,
                                  t=(top + (16 if presentation_mode() else 0)) if m.t is None else m.t,
                                  b=max(10, m.b or 0)))
    fmt = st.session_state.get("_export", "png")
    config = {**PLOTLY_CONFIG, "toImageButtonOptions": {"format": fmt, "filename": name,
                                                        **({"scale": 3} if fmt == "png" else {})}}
    return st.plotly_chart(fig, config=config, **kwargs)


# form fields in rows that wrap (ui.form_row): each FIELD_PX wide, so a row holds four at 1440 px and two at a
# 1280 px projector at 150 % (853 px, the sidebar open); a value as long as "own: per matrix" reads whole
FIELD_PX = 230
AUTO_WINDOWS = "auto"  # the evaluation windows' placeholder: the field is empty
AUTO_WINDOWS_HELP = "Empty = auto: 16 windows on a CPU, all on a GPU; 0 = all windows."


def form_row():
    """A row of form fields (each `width=FIELD_PX`) that wraps onto the next line where the screen is narrow:
    columns of fixed count cut the values at 150 % zoom. Inputs line up at the bottom (some labels take two
    lines)."""
    return st.container(horizontal=True, vertical_alignment="bottom")


METRIC_PX = 300  # a metric's width in a wrapping row: its label and value read whole at 1280 px / 150 %


MISSING = "–"  # what a table shows for a missing value (st.dataframe's own default reads "None")


def table(df: pd.DataFrame, name: str, **kwargs):
    """A dataframe plus a CSV download button (the dataframe's own toolbar downloads too); a missing value
    reads "–"."""
    out = st.dataframe(df, **{"placeholder": MISSING, **kwargs})
    st.download_button("Download CSV", df.to_csv(index=False).encode(), file_name=f"{name}.csv", mime="text/csv",
                       key=f"csv_{name}", on_click="ignore")
    return out


def log_axis(fig: go.Figure, values, axis: str = "y", lo: float | None = None, hi: float | None = None) -> None:
    """A log axis labelled at 1-2-5 (views.charts.log_ticks: a chart of 13–200 reads 20, 50, 100, 200; many
    decades get one label per decade), over the values' span or [lo, hi]."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if lo is None or hi is None:
        if not v.size:
            fig.update_layout(**{f"{axis}axis": dict(type="log")})
            return
        span = max(math.log10(v.max() / v.min()), 0.3)
        pad = 10 ** (0.06 * span)
        lo, hi = float(v.min()) / pad, float(v.max()) * pad
    vals, text = charts.log_ticks(lo, hi)
    fig.update_layout(**{f"{axis}axis": dict(type="log", range=[math.log10(lo), math.log10(hi)], tickvals=vals,
                                             ticktext=text)})


def reference_line(fig: go.Figure, y: float, label: str, log: bool, color: str = "#555", dash: str = "dot",
                   side: str = "right") -> None:
    """A horizontal reference line with its label on a y axis. Not add_hline(annotation_text=...): on a log
    axis plotly reads an annotation's y as log10 of the value, so the label landed at 10^y and autorange
    stretched the axis to it (a dense ppl of 15.9 drew the axis up to 1e16)."""
    fig.add_hline(y=y, line_dash=dash, line_color=color)
    fig.add_annotation(x=1 if side == "right" else 0, xref="paper", xanchor=side, y=math.log10(y) if log else y,
                       yref="y", yanchor="bottom", text=label, showarrow=False, font=dict(color=color))


def hist_figure(hist: explorer.Hist, title: str, threshold: float | None = None,
                threshold_label: str = "") -> go.Figure:
    """Pre-binned counts as bars (lists, so the spec holds plain numbers)."""
    x_title = "log₁₀ score" if hist.log else "score"
    fig = go.Figure(go.Bar(x=hist.centers.tolist(), y=hist.counts.tolist(), width=hist.widths.tolist(),
                           marker_line_width=0, name=title,
                           hovertemplate=f"{x_title} %{{x:.4g}}<br>neurons %{{y}}<extra></extra>"))
    notes = []
    if hist.log and hist.zeros:
        notes.append(f"{hist.zeros:,} zero scores not shown")
    if hist.dropped:
        notes.append(f"{hist.dropped:,} non-finite scores not shown")
    fig.update_layout(title=title + (f" ({'; '.join(notes)})" if notes else ""), xaxis_title=x_title,
                      yaxis_title="neurons", bargap=0, showlegend=False)
    if threshold is not None:
        fig.add_vline(x=threshold, line_color="#d62728", line_dash="dash", line_width=2,
                      annotation_text=threshold_label, annotation_position="top left",
                      annotation_font_color="#d62728")
    return fig


def url_note() -> None:
    """Say once when a shared link named something this cache does not have."""
    note = st.session_state.pop("_url_note", None)
    if note:
        st.warning(plain(note))


# ----------------------------------------------------------------------------------------------
# following a run (every page that starts runs: Statistics, Prune & evaluate, Search)

POLL_SECONDS = 1.0  # how often a page looks at what it follows, and only while something is queued or running
ACTIVE = ("queued", "running")


def _followed(kind: str, param: str, warn: bool) -> dict | None:
    """The `kind` run this page follows: the one named in the URL (`param`: it survives a reload and travels
    with a shared link), else the session's (the URL is rewritten after a page switch). Reading it marks
    a run whose process is gone as failed; a run of another kind is another page's."""
    key = f"{kind}_run"
    for run_id, from_url in ((url_param(param), True), (st.session_state.get(key), False)):
        if run_id is None:
            continue
        try:
            run = RunStore().get(int(run_id))
        except UserError:
            if from_url and warn:
                st.warning(f"Run {run_id} does not exist.")
            continue
        if run["kind"] == kind:
            st.session_state[key] = run["id"]
            if st.query_params.get(param) != str(run["id"]):
                st.query_params[param] = str(run["id"])
            return run
    st.session_state.pop(key, None)
    return None


def forget_run(kind: str, param: str = "run") -> None:
    """Stop following the page's run (its outcome has been taken)."""
    st.session_state.pop(f"{kind}_run", None)
    st.query_params.pop(param, None)


def follow_run(kind: str, show: Callable[[dict | None], None] | None = None, *, param: str = "run",
               header: Callable[[dict], None] | None = None, stop: str = "Cancel",
               busy: Callable[[], bool] | None = None, others: Callable[[dict], str] | None = None) -> None:
    """Follow the page's `kind` run: while it is queued or running (or `busy()`: something else the page
    shows still changes), a fragment polls every POLL_SECONDS — `header(run)`, the run's stage with the
    stage's own bar, a `stop` button, and jobs.recover() (a dead worker's run is marked failed, a queue whose
    dispatcher was killed gets a new one); `show(run)` (run may be None) draws below it on every poll. When
    the run ends, the whole page reruns once (what it shows includes the outcome) and polling stops.

    `others(run) -> label`: also show every other queued or running run of `kind` — started in another tab,
    by another user or from the command line — with its stage bar, for as long as it is active."""
    run = _followed(kind, param, warn=True)
    flag = f"_following_{kind}"

    def elsewhere(followed: dict | None) -> list[dict]:
        if others is None:
            return []
        return [r for r in RunStore().list(kind=kind, limit=50)
                if r["status"] in ACTIVE and (followed is None or r["id"] != followed["id"])]

    if ((run is not None and run["status"] in ACTIVE) or (busy is not None and busy())
            or elsewhere(run)):
        st.session_state[flag] = True

    @st.fragment(run_every=POLL_SECONDS if st.session_state.get(flag) else None)
    def poll() -> None:
        run = _followed(kind, param, warn=False)
        running = run is not None and run["status"] in ACTIVE
        if run is not None and header is not None:
            header(run)
        if running:
            run_progress_bars(run)
            if st.button(stop, key=f"cancel_{run['id']}"):
                jobs.cancel(run["id"])
                st.rerun()
        other = elsewhere(run)
        if running or other:
            jobs.recover()
        if other:
            _other_runs(other, others)
        ended = (not running and not other and not (busy is not None and busy())
                 and st.session_state.pop(flag, False))
        if show is not None:
            show(run)
        if ended:
            st.rerun()

    poll()
    if others is not None:  # the pages that show runs started elsewhere (Prune, Search)
        watch_runs(kind)


OTHER_SHOWN = 3  # other active runs drawn with their bars; the rest are counted


def _other_runs(runs: list[dict], label: Callable[[dict], str]) -> None:
    running = [r for r in runs if r["status"] == "running"]
    queued = [r for r in runs if r["status"] == "queued"]
    with st.container(border=True):
        st.markdown("**Also active** (started elsewhere: another tab, another user, the command line, or queued "
                    "for a sweep)")
        for r in (running + queued)[:OTHER_SHOWN]:
            where = "from the command line" if r.get("origin") == "cli" else "from the app"
            st.caption(plain(f"Run {r['id']} · {label(r)} · {where}"))
            run_progress_bars(r)
        rest = len(running + queued) - OTHER_SHOWN
        if rest > 0:
            st.caption(f"… and {rest} more queued.")


# how often an open Prune / Search page's browser tab looks at the run store's change stamp: a GET of a few bytes
# that runs no script (components/watch.py); Python reruns only when the stamp changed. Where the stamp cannot be
# served (a read-only cache folder) a fragment rerun looks instead, every WATCH_FALLBACK_SECONDS — each look is then
# a script run (Streamlit's handling of the page's widget states: ~2-3 % of a core at 5 s, bench/idle_cpu.py)
WATCH_SECONDS = 2.0
WATCH_FALLBACK_SECONDS = 5.0


def _watch_look(kind: str, path, stamp) -> tuple | None:
    """(stamp, activity of `kind`) as this session last saw them; the query runs only when the stamp moved."""
    key = f"_watch_{kind}"
    last = st.session_state.get(key)
    if last is not None and last[0] == stamp:
        return last
    try:
        now = (stamp, RunStore(path).activity(kind))
    except UserError:
        return last
    st.session_state[key] = now
    return now


def watch_runs(kind: str) -> None:
    """Show a run started elsewhere (another tab, the command line) within about WATCH_SECONDS, idle or not. The run
    store replaces its change stamp (run_store.activity_file) whenever a run is created, claimed or finished; the
    tab polls that file and fires a trigger only when it changed, which reruns this fragment: it reads which runs are
    active (RunStore.activity: one small query) and, when that differs from what the page drew — a run of `kind`
    queued, started or ended — reruns the page, whose own polling takes over. Progress writes do not move the stamp.
    What the page drew is taken again when its run ends (watch_settle): runs the page itself queued later in the
    same run cause no second rerun."""
    from components import watch

    path = run_store.default_path()
    served = watch.stamp_url(run_store.activity_file(path)) is not None
    stamp_of = run_store.read_activity if served else run_store.stamp
    st.session_state.pop(f"_watch_{kind}", None)
    _watch_look(kind, path, stamp_of(path))  # this run draws the page as it is now: the watch compares with that
    st.session_state.setdefault("_watched", set()).add(kind)

    @st.fragment(run_every=None if served else WATCH_FALLBACK_SECONDS)
    def watcher() -> None:
        before = st.session_state.get(f"_watch_{kind}")
        stamp = stamp_of(path)  # read before the query: a change in between fires the trigger once more
        now = _watch_look(kind, path, stamp)
        if before is not None and now is not None and before[1] != now[1]:
            st.rerun(scope="app")
        if served:
            watch.watch(run_store.activity_file(path), stamp, WATCH_SECONDS, key=f"_watcher_{kind}")

    watcher()


def watch_settle() -> None:
    """At the end of a page's run (app.py): what the page drew includes the runs it queued itself (a sweep, a
    study), so the watch must not take them for runs started elsewhere."""
    from components import watch

    path = run_store.default_path()
    served = watch.stamp_url(run_store.activity_file(path)) is not None
    for kind in st.session_state.pop("_watched", ()):
        _watch_look(kind, path, (run_store.read_activity if served else run_store.stamp)(path))


def run_progress_bars(run: dict) -> None:
    """A queued or running run: the whole run's bar with its current stage, and the stage's own bar."""
    stage, detail, fraction = stage_progress(run["message"] or "")
    if run["status"] == "queued":
        stage = "waiting for a worker"
    st.progress(float(run["progress"]), text=f"Run {run['id']} ({run['status']}) — {plain(stage or 'starting')}")
    if fraction is not None:
        st.progress(fraction, text=plain(f"{stage}: {detail}"))
    elif detail:
        st.caption(plain(detail))


def fmt_ppl(x) -> str:
    """A perplexity for display: a diverged one (inf, or stored as null) reads "∞"."""
    return ppl_text(x, infinite="∞")


def source_problem(text: str, field: str) -> str | None:
    """What is wrong with a typed text source (`field`: calib or eval), in the app's words (None if nothing):
    the request's own check of the name, then the file a file: source names."""
    try:
        requests.check_source_name(text, field)
        text = (text or "").strip()
        if text.startswith("file:"):
            inputs.check_typed_path(text[len("file:"):].strip(), f"{spec_label(field).lower()} file")
    except UserError as e:
        return requests.app_message(e)
    return None


def path_problem(path_text: str, what: str, folder: bool = False) -> str | None:
    """What is wrong with a typed path a run from the app will use (None if nothing)."""
    try:
        inputs.check_typed_path(path_text, what, folder)
    except UserError as e:
        return str(e)
    return None


def model_problem(spec_text: str) -> str | None:
    """What is wrong with a typed model spec (None if nothing), without loading anything."""
    try:
        inputs.check_typed_model(spec_text)
    except UserError as e:
        return str(e)
    return None


def spec_label(field: str) -> str:
    """The widget name of request field `field` (its declared label, without a "(...)" hint)."""
    return requests.field_spec(field).name_in_app
