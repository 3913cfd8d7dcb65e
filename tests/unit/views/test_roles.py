"""neuronrank.views.roles: the Roles page's tables, scatter sample and contexts, against numpy and scoring."""

import numpy as np
import pandas as pd
import pytest

from neuronrank.analysis import scoring
from neuronrank.views import roles as views
from neuronrank.views.entries import EntryData
from neuronrank.views.history import decade_ticks


@pytest.mark.parametrize("split_w", [False, True])
def test_role_tables_match_scoring_roles(frame, arrays, split_w):
    rt = views.role_tables(arrays, split_w=split_w)
    labels, counts = scoring.roles(frame, split_w=split_w)
    np.testing.assert_array_equal(rt.labels, labels)
    np.testing.assert_array_equal(rt.counts.to_numpy(), counts.drop(index="all").to_numpy())
    np.testing.assert_allclose(rt.percent.sum(axis=1), 100)
    total = counts.loc["all"]
    assert rt.overall.to_numpy().sum() == len(frame)
    assert rt.overall.loc["TF high", "IDF high" + (", |W| high" if split_w else "")] == \
        total["critical / high |W|" if split_w else "critical"]
    assert rt.overall.loc["TF low", "IDF low" + (", |W| low" if split_w else "")] == \
        total["prune-first / low |W|" if split_w else "prune-first"]
    assert rt.overall.loc["TF high", "IDF low" + (", |W| high" if split_w else "")] == \
        total["important / high |W|" if split_w else "important"]
    assert list(rt.summary["neurons"]) == list(total)
    row = rt.summary.set_index("role").loc["moderate / low |W|" if split_w else "moderate"]
    assert (row["TF"], row["IDF"]) == ("low", "high")


def test_role_tables_global_thresholds(frame, arrays):
    med = views.global_medians(arrays)
    rt = views.role_tables(arrays, med["tf"], med["idf"], med["w_norm"], split_w=True)
    _, counts = scoring.roles(frame, med["tf"], med["idf"], med["w_norm"], split_w=True)
    np.testing.assert_array_equal(rt.counts.to_numpy(), counts.drop(index="all").to_numpy())
    # the |W| threshold is ignored unless the |W| split is on
    rt4 = views.role_tables(arrays, med["tf"], med["idf"], med["w_norm"], split_w=False)
    assert rt4.counts.shape == (3, 4)


def test_roles_accepts_the_full_stats_frame(frame):
    # to_frame() has a sum_abs column, which pandas exposes as an attribute: it is still a frame
    full = frame.assign(sum_abs=frame["tf"] * 64)
    labels, counts = scoring.roles(full)
    np.testing.assert_array_equal(counts.to_numpy(), scoring.roles(frame)[1].to_numpy())


def test_critical_vs_chance_is_the_critical_share(frame):
    rt = views.role_tables(frame, quantile=0.9)
    chance = views.critical_vs_chance(rt, 0.9)
    np.testing.assert_allclose(chance["observed"], rt.percent["critical"].to_numpy())
    np.testing.assert_allclose(chance["expected"], 1.0)  # (1 - 0.9)² = 1 %


def test_dead_kept_and_decade_ticks():
    arrays = {"n_active": np.array([0, 1, 500, 900]), "tokens": np.full(4, 1000), "layer": np.zeros(4, int)}
    # dead: active on < 0.1 % of tokens -> the first only (1/1000 is not below 0.1 %)
    assert views.dead_kept(arrays, np.array([5.0, 1.0, 2.0, 3.0]), 0.5) == (1, 1, 1)  # the dead one scores highest
    assert views.dead_kept(arrays, np.array([0.1, 1.0, 2.0, 3.0]), 0.5) == (1, 1, 0)  # lowest: pruned
    assert decade_ticks([0.5, 2.7, np.nan]) == [0.0, 1.0, 2.0, 3.0]
    np.testing.assert_allclose(decade_ticks([1.0, 1.6]), [1.0, 1.2, 1.4, 1.6])
    assert decade_ticks([np.nan]) == []


class FakeTokenizer:
    """decode(ids) -> the words joined; id 5 decodes to a leading-space word like BPE does."""

    words = {0: "a", 1: "b", 2: "c", 3: "*x*", 4: "\n", 5: " big", 6: "d"}

    def decode(self, ids):
        return "".join(self.words.get(int(i), "?") for i in ids)


def entry_with(top_vals, top_window, top_pos, windows, first_window=0):
    return EntryData(key="k", params={}, meta={}, frame=pd.DataFrame(), n_layers=1, width=1,
                     top_vals=np.asarray(top_vals, np.float32)[None, None],
                     top_window=np.asarray(top_window, np.int32)[None, None],
                     top_pos=np.asarray(top_pos, np.int32)[None, None],
                     windows=None if windows is None else np.asarray(windows, np.int32),
                     first_window=first_window)


def test_top_contexts_windows_and_padding():
    windows = [[0, 1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1, 0]]
    data = entry_with([3.0, 2.0, -np.inf], [1, 0, -1], [0, 5, -1], windows)
    ctx = views.top_contexts(data, 0, 0, radius=2)
    assert [c.value for c in ctx] == [3.0, 2.0]  # the padding entry is skipped
    assert ctx[0].ids == [6, 5, 4] and ctx[0].at == 0  # clipped at the window start
    assert ctx[1].ids == [3, 4, 5, 6] and ctx[1].at == 2 and ctx[1].pos == 5  # clipped at the end
    # windows of a shard are indexed from first_window
    shard = entry_with([1.0], [10], [1], [[0, 1, 2]], first_window=10)
    assert views.top_contexts(shard, 0, 0, radius=1)[0].ids == [0, 1, 2]
    assert views.top_contexts(entry_with([1.0], [0], [0], None), 0, 0) == []


def test_context_html_marks_and_escapes():
    tok = FakeTokenizer()
    text = views.context_html(tok, views.ActivationContext(1.0, 0, 2, [3, 4, 5, 0], 2))
    assert text == "*x*⏎<mark> big</mark>a"  # no markdown: asterisks stay literal text, newline visible
    newline = views.context_html(tok, views.ActivationContext(1.0, 0, 1, [0, 4, 0], 1))
    assert newline == "a<mark>⏎</mark>a"  # a whitespace token is made visible, not an empty mark
    assert views.context_html(_Tok({1: "<b>", 2: "**)"}), views.ActivationContext(1.0, 0, 1, [1, 2], 1)) == \
        "&lt;b&gt;<mark>**)</mark>"


class _Tok:
    def __init__(self, pieces):
        self.pieces = pieces

    def decode(self, ids):
        return "".join(self.pieces[i] for i in ids)


def test_column_colours_scale_each_role_on_its_own():
    counts = pd.DataFrame({"critical": [0, 48, 96], "prune-first": [1200, 1300, 1250], "dead": [0, 0, 0]})
    c = views.column_colours(counts)
    np.testing.assert_allclose(c["critical"], [0, 0.5, 1])
    np.testing.assert_allclose(c["prune-first"], [0, 1, 0.5])  # its own range, not the largest column's
    np.testing.assert_array_equal(c["dead"], [0, 0, 0])  # a constant column: no division by zero


def test_pattern_notes_say_where_a_role_vanishes(frame, arrays):
    assert views.layer_ranges([14, 2, 3, 4, 7, 15]) == "2–4, 7, 14–15" and views.layer_ranges([5]) == "5"
    rt = views.role_tables(frame, quantile=0.9, dead_below=scoring.DEAD_BELOW)
    crit = rt.counts["critical"]
    rt.counts.loc[1:, "critical"] = 0  # critical only in layer 0
    rt.counts.loc[0, "critical"] = max(int(crit[0]), 3)
    assert not any(n.startswith("dead") for n in views.pattern_notes(rt, 0.9))  # 2 a layer everywhere: nothing to say
    rt.counts.loc[0, "dead"] = 3
    notes = views.pattern_notes(rt, quantile=0.9)
    first = notes[0]
    assert first.startswith("critical: most in layer 0 (") and first.endswith("none in layers 1–2")
    assert "chance would give 1.0 %" in first
    assert notes[-1] == "dead: 7 in all, most in layer 0 (3)"  # the sparse class last
    assert all(len(rt.counts[r.split(":")[0]].unique()) > 1 for r in notes)


def test_contexts_heading_says_least_negative_for_never_positive_neurons():
    ctx = lambda v: views.ActivationContext(v, 0, 0, [1], 0)  # noqa: E731
    assert views.contexts_heading([ctx(-0.18), ctx(-0.2)], n_active=0).startswith("**Its least negative")
    assert "never positive" in views.contexts_heading([ctx(-0.18)], n_active=0)
    assert "not positive on these windows" in views.contexts_heading([ctx(-0.18)], n_active=3)
    assert views.contexts_heading([ctx(2.5), ctx(-0.1)], n_active=40).startswith("**Top-activating")
    assert views.contexts_heading([], n_active=0).startswith("**Top-activating")
