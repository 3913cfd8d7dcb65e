"""What makes a chart legible from the back of a room, as numbers: log ticks at 1-2-5, whole-number ticks,
an axis range that outliers do not decide, one fixed colour per compared series, and the font sizes of
the presentation mode. numpy only (the app's ui.py turns these into plotly layout)."""

from __future__ import annotations

import colorsys
import hashlib
import html
import math
from dataclasses import dataclass

import numpy as np

def chart_text(text) -> str:
    """Text from a user or a stored run inside a plotly title or label, shown as text: plotly renders a
    subset of HTML there (links included), so it is escaped."""
    return html.escape(str(text), quote=False)


# ----------------------------------------------------------------------------------------------
# ticks


def number_text(v: float) -> str:
    """A tick label for a perplexity: 20, 500, 2,000, 50k, 2M, 1e9 — short enough for a tick."""
    if not math.isfinite(v):
        return "∞"
    a = abs(v)
    if a >= 1e9:
        return f"{v:.0e}".replace("e+0", "e").replace("e+", "e")
    for at, div, unit in ((1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if a >= at:
            return f"{v / div:.3g}{unit}"
    if a >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def log_ticks(lo: float, hi: float, max_ticks: int = 9) -> tuple[list[float], list[str]]:
    """Tick values and labels on a log axis from `lo` to `hi`: 1-2-5 per decade (a chart of 13–200 reads
    20, 50, 100, 200), one per decade when that would be more than `max_ticks`, every other decade beyond;
    spans too short for two 1-2-5 ticks get 1-9 multiples, then even steps. Both ends included if on a tick."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0 or hi <= 0:
        return [], []
    lo, hi = min(lo, hi), max(lo, hi)
    d0, d1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))

    def within(mults, step=1):
        out = []
        for d in range(d0, d1 + 1, step):
            for m in mults:
                v = m * 10.0 ** d
                if lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9):
                    out.append(v)
        return out

    ticks = within((1, 2, 5))
    if len(ticks) > max_ticks:
        ticks = within((1,))
        step = 2
        while len(ticks) > max_ticks:  # many decades: every other (third, ...) decade
            d0 = math.floor(math.log10(lo))
            ticks = [v for v in within((1,)) if round(math.log10(v) - d0) % step == 0]
            step += 1
    if len(ticks) < 2:
        ticks = within(range(1, 10))
    if len(ticks) < 2:  # less than a factor 2: even steps
        ticks = [float(v) for v in np.linspace(lo, hi, 4)]
        ticks = [float(f"{v:.3g}") for v in ticks]
    return ticks, [number_text(v) for v in ticks]


def ppl_short(v) -> str:
    """A perplexity in a table beside a chart: 51.40, 2,052.7, 14.1M; blank when missing."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return ""
    if math.isnan(v):
        return ""
    if not math.isfinite(v):
        return "∞"
    if abs(v) < 1000:
        return f"{v:.2f}"
    if abs(v) < 1e4:
        return f"{v:,.1f}"
    return number_text(v)


def integer_dtick(n: int, max_ticks: int = 12) -> int:
    """The step of whole-number ticks (trial numbers) on an axis of `n` values: 1, 2, 5, 10, 20, ..."""
    n = max(int(n), 1)
    for scale in (1, 10, 100, 1000, 10000):
        for m in (1, 2, 5):
            if n / (m * scale) <= max_ticks:
                return m * scale
    return 100000


# ----------------------------------------------------------------------------------------------
# an axis range that outliers do not decide


@dataclass(frozen=True)
class AxisRange:
    lo: float  # data units
    hi: float
    outliers: np.ndarray  # bool, aligned with the values given: drawn at the top edge, listed

    def log_range(self) -> list[float]:
        """plotly's range of a log axis (log10 of the ends)."""
        return [math.log10(self.lo), math.log10(self.hi)]


GAP_DECADES = 2.0  # a cluster of points this far above the rest (and fewer than the rest) is off the scale


def robust_range(values, keep=(), log: bool = True, gap_decades: float = GAP_DECADES) -> AxisRange:
    """The y range of a perplexity chart: every value, unless a minority of them sits more than
    `gap_decades` decades above the others (a 95 % run at ppl 1e7 over 50 % runs at 20–200) — those are
    outliers, drawn at the top edge and listed, and the axis fits the rest. `keep` (the dense line, a
    baseline) always lies inside. Non-finite values (a diverged run) are outliers too."""
    v = np.asarray(values, dtype=float).reshape(-1)
    ok = np.isfinite(v) & (v > 0) if log else np.isfinite(v)
    out = ~ok
    finite = np.sort(v[ok])
    if finite.size >= 3 and log:
        lv = np.log10(finite)
        gaps = np.diff(lv)
        for i in np.flatnonzero(gaps >= gap_decades):  # the lowest gap that leaves a minority above it
            above = finite.size - (i + 1)
            if above < i + 1:
                cut = finite[i]
                out |= ok & (v > cut)
                break
    inside = v[ok & ~out]
    kept = np.asarray([k for k in keep if k is not None and np.isfinite(k) and (k > 0 or not log)], dtype=float)
    inside = np.concatenate([inside, kept])
    if inside.size == 0:
        return AxisRange(1.0, 10.0, out)
    lo, hi = float(inside.min()), float(inside.max())
    if log:
        span = max(math.log10(hi / lo), 0.3)
        pad = 10 ** (0.08 * span)
        lo, hi = lo / pad, hi * pad
        if out.any():
            hi *= 10 ** (0.06 * span)  # room for the outliers' markers at the edge
    else:
        span = max(hi - lo, abs(hi) * 0.1, 1e-9)
        lo, hi = lo - 0.08 * span, hi + 0.08 * span + (0.06 * span if out.any() else 0.0)
    return AxisRange(lo, hi, out)


# ----------------------------------------------------------------------------------------------
# one fixed colour per compared series


# each method's base hue (degrees) and saturation: a method keeps its colour on every chart and page, whatever
# else is plotted; a method not listed gets a hue from its name
METHOD_HUES = {
    "neuronrank_old": (212, 0.72),  # blue
    "wanda": (355, 0.72),  # red
    "magnitude": (32, 0.85),  # orange
    "sparsegpt": (135, 0.55),  # green
    "random": (0, 0.0),  # grey: the control
    "ria": (280, 0.50),  # purple
    "flap": (175, 0.60),  # teal
    "dense": (0, 0.0),
}
# a variant's shift from its method's colour: 3 hues × 3 lightnesses, none of them the method's own colour
_VARIANT_HUE = (-20, 0, 20)
_VARIANT_LIGHT = (0.27, 0.58, 0.70)
SYMBOLS = {"unstructured": "circle", "structured": "square", "2:4": "diamond", "4:8": "star"}
DASHES = ("dash", "dot", "dashdot", "longdash")


@dataclass(frozen=True)
class SeriesStyle:
    color: str
    symbol: str
    dash: str


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:4], "big")


def _hex(h: float, l: float, s: float) -> str:
    r, g, b = colorsys.hls_to_rgb((h % 360) / 360.0, l, s)
    return "#{:02x}{:02x}{:02x}".format(*(round(c * 255) for c in (r, g, b)))


def method_color(method: str) -> str:
    """The method's own colour (its setup as its paper runs it)."""
    hue, sat = METHOD_HUES.get(method, (_digest(method) % 360, 0.6))
    return _hex(hue, 0.45 if sat else 0.42, sat)


def series_style(method: str, sparsity_type: str = "unstructured", variant: str = "") -> SeriesStyle:
    """A series' look, a function of what the series is and nothing else (not of what else is plotted,
    nor of the order it was added): the method's colour; a variant (other exponents, sequential, per row,
    all linears — `variant` is that part of the series name, "" for the method's own setup and for
    NeuronRank-OLD's α=β=γ=1) shifts hue and lightness and dashes the line, both from a hash of it; the
    sparsity type picks the marker."""
    symbol = SYMBOLS.get(sparsity_type, "hexagon")
    if not variant:
        return SeriesStyle(method_color(method), symbol, "solid")
    hue, sat = METHOD_HUES.get(method, (_digest(method) % 360, 0.6))
    d = _digest(variant)
    h = hue + _VARIANT_HUE[d % len(_VARIANT_HUE)]
    light = _VARIANT_LIGHT[(d >> 4) % len(_VARIANT_LIGHT)]
    if not sat:  # a grey method: its variants differ by lightness only
        light = _VARIANT_LIGHT[d % len(_VARIANT_LIGHT)]
    return SeriesStyle(_hex(h, light, max(sat, 0.0)), symbol, DASHES[(d >> 8) % len(DASHES)])


# ----------------------------------------------------------------------------------------------
# font sizes: normal and presentation mode

DARK = "#111111"


def layout_style(present: bool) -> dict:
    """Fonts for every chart of the app (ui.chart applies them): "layout" for the figure, "axis" for each of
    its x and y axes (subplots too), "colorbar" for colour scales. In presentation mode tick labels are 18 px
    (≥ 16 px, legible from the back of a room) in a near-black; titles and legends to match."""
    tick, title, legend, axis_title = (18, 24, 18, 20) if present else (13, 17, 13, 14)
    color = DARK if present else "#262730"
    return {
        "layout": dict(font=dict(size=tick, color=color), title_font=dict(size=title, color=color),
                       legend=dict(font=dict(size=legend, color=color), title_font=dict(size=legend, color=color)),
                       hoverlabel=dict(font_size=tick + 1)),
        "axis": dict(tickfont=dict(size=tick, color=color), title_font=dict(size=axis_title, color=color),
                     automargin=True),
        "colorbar": dict(tickfont=dict(size=tick, color=color), title_font=dict(size=axis_title, color=color)),
        "tick_px": tick,
    }
