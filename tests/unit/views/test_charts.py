"""Legible charts as numbers: 1-2-5 log ticks, whole-number ticks, axis ranges outliers do not decide, one
fixed colour per series, presentation-mode fonts."""

import math

import numpy as np
import pandas as pd

from neuronrank.config.methods import METHODS
from neuronrank.views import charts, history


def test_log_ticks_label_13_to_200_at_1_2_5():
    vals, text = charts.log_ticks(13, 200)
    assert vals == [20, 50, 100, 200] and text == ["20", "50", "100", "200"]
    vals, text = charts.log_ticks(9, 1100)
    assert vals == [10, 20, 50, 100, 200, 500, 1000] and text[-1] == "1,000"


def test_log_ticks_thin_out_over_many_decades_and_fill_in_short_spans():
    vals, text = charts.log_ticks(10, 2e7)
    assert vals == [10 ** k for k in range(1, 8)] and text == ["10", "100", "1,000", "10k", "100k", "1M", "10M"]
    vals, _ = charts.log_ticks(1, 1e15)
    assert len(vals) <= 9 and all(math.log10(v) == round(math.log10(v)) for v in vals)
    vals, _ = charts.log_ticks(25, 45)  # no 1-2-5 tick inside twice: multiples 30, 40
    assert vals == [30, 40]
    vals, _ = charts.log_ticks(31, 33)  # less than a factor 2: even steps, still labelled
    assert len(vals) == 4 and vals[0] == 31 and vals[-1] == 33


def test_integer_ticks_of_trial_axes_are_whole_numbers():
    assert charts.integer_dtick(2) == 1 and charts.integer_dtick(12) == 1
    assert charts.integer_dtick(13) == 2 and charts.integer_dtick(40) == 5 and charts.integer_dtick(200) == 20


def test_an_outlier_far_above_the_rest_does_not_decide_the_axis():
    """The walk's case: 50 % runs at 20–200 and one 95 % run at ppl 1e7."""
    values = [21.0, 35.0, 74.0, 181.0, 1.2e7]
    r = charts.robust_range(values, keep=[12.9])
    assert r.outliers.tolist() == [False, False, False, False, True]
    assert 10 < r.lo < 12.9 and 181 < r.hi < 1000  # the dense line and every other point inside
    # without the outlier the range is the same fit (the outlier only adds room for its marker at the edge)
    plain = charts.robust_range(values[:4], keep=[12.9])
    assert plain.lo == r.lo and plain.hi < r.hi < plain.hi * 1.5


def test_no_outlier_without_a_clear_minority_above_a_gap():
    assert not charts.robust_range([30.0, 1e7]).outliers.any()  # one against one: both are the data
    assert not charts.robust_range([20, 30, 45, 60, 90]).outliers.any()  # no gap of two decades
    r = charts.robust_range([20, 30, 1e4, 1e7])  # the lowest gap leaving a minority above: only 1e7
    assert r.outliers.tolist() == [False, False, False, True]
    r = charts.robust_range([20, 30, 50, float("inf"), float("nan")])  # diverged runs: off the scale too
    assert r.outliers.tolist() == [False, False, False, True, True] and r.hi < 100


def test_series_colour_is_a_function_of_the_series_alone():
    """α=β=γ=1 once went from blue to red when a series was added: the colour depends on nothing else."""
    original = "neuronrank_old · unstructured · α=1 β=1 γ=1"
    s1 = history.series_style(original, "neuronrank_old", "unstructured")
    assert s1 == history.series_style(original, "neuronrank_old", "unstructured")
    assert s1.color == charts.method_color("neuronrank_old") and s1.dash == "solid"
    r, g, b = (int(s1.color[i:i + 2], 16) for i in (1, 3, 5))
    assert b > r and b > g  # blue
    wanda = history.series_style("wanda · unstructured", "wanda", "unstructured")
    r, g, b = (int(wanda.color[i:i + 2], 16) for i in (1, 3, 5))
    assert r > g and r > b  # red
    # every method of the registry has its own colour
    colours = {charts.method_color(m) for m in METHODS}
    assert len(colours) == len(METHODS)
    # a variant is near its method's hue, distinct from the original, stable, and dashed
    v = history.series_style("neuronrank_old · unstructured · α=1 β=2 γ=0", "neuronrank_old", "unstructured")
    assert v.color != s1.color and v.dash != "solid"
    assert v == charts.series_style("neuronrank_old", "unstructured", "α=1 β=2 γ=0")
    # the type picks the marker: the same method in 2:4 is the same colour
    assert history.series_style("wanda · 2:4", "wanda", "2:4").color == wanda.color
    assert history.series_style("wanda · 2:4", "wanda", "2:4").symbol != wanda.symbol


def test_comparison_chart_colours_do_not_move_when_a_series_is_added():
    def colours(labels):
        return {lab: history.series_style(lab, lab.split(" · ")[0], lab.split(" · ")[1]).color for lab in labels}

    before = colours(["neuronrank_old · unstructured · α=1 β=1 γ=1", "wanda · unstructured"])
    after = colours(["magnitude · unstructured", "neuronrank_old · unstructured · α=1 β=1 γ=1",
                     "neuronrank_old · unstructured · α=0 β=2 γ=0", "wanda · unstructured"])
    assert all(after[k] == v for k, v in before.items())


def test_presentation_fonts_are_at_least_16_px_and_dark():
    big, normal = charts.layout_style(True), charts.layout_style(False)
    assert big["axis"]["tickfont"]["size"] >= 16 and big["layout"]["legend"]["font"]["size"] >= 16
    assert big["layout"]["legend"]["title_font"]["size"] >= 16  # the legend's title too (it stayed small)
    assert big["layout"]["title_font"]["size"] > big["axis"]["tickfont"]["size"]
    assert big["axis"]["tickfont"]["color"] == charts.DARK
    assert normal["axis"]["tickfont"]["size"] < big["axis"]["tickfont"]["size"]


def test_history_table_shows_the_pruned_perplexity_early_and_the_comparison_filters_by_type():
    frame = pd.DataFrame([{"run": 1, "status": "done", "method": "wanda", "type": "unstructured", "ratio": 0.5,
                           "alpha": 1.0, "beta": 1.0, "gamma": 1.0, "calibration": None, "per": None, "targets": None,
                           "pruned_ppl": 30.0, "dense_ppl": 13.0, "eval": "wiki", "eval_seqlen": 512,
                           "eval_windows": 16, "model": "m", "seed": 0},
                          {"run": 2, "status": "done", "method": "wanda", "type": "2:4", "ratio": 0.5,
                           "alpha": 1.0, "beta": 1.0, "gamma": 1.0, "calibration": None, "per": None, "targets": None,
                           "pruned_ppl": 90.0, "dense_ppl": 13.0, "eval": "wiki", "eval_seqlen": 512,
                           "eval_windows": 16, "model": "m", "seed": 0}])
    shown = history.history_table(frame)
    assert list(shown.columns).index("pruned_ppl") <= 5 and set(shown.columns) == set(frame.columns)
    comp = history.comparison(frame, sparsity_type="2:4")
    assert comp["series"].tolist() == ["wanda · 2:4"] and comp["pruned_ppl"].tolist() == [90.0]
    table = history.comparison_table(history.comparison(frame))
    assert table.columns.tolist() == ["series", "50 %"]
    assert table.set_index("series").loc["wanda · unstructured", "50 %"] == 30.0
    assert history.series_variant("neuronrank_old · unstructured · α=1 β=1 γ=1 · sequential") == "sequential"


def test_short_numbers_for_tables_and_labels():
    assert charts.ppl_short(51.402) == "51.40" and charts.ppl_short(2052.728) == "2,052.7"
    assert charts.ppl_short(14118275.09) == "14.1M" and charts.ppl_short(float("nan")) == ""
    assert charts.ppl_short(None) == "" and charts.ppl_short(float("inf")) == "∞"
    assert charts.number_text(5.3e6) == "5.3M" and charts.number_text(2.6e5) == "260k"
    assert charts.number_text(3e9) == "3e9" and charts.chart_text("<a href=x>y</a>") == "&lt;a href=x&gt;y&lt;/a&gt;"
