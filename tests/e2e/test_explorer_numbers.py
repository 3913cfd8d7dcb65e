"""The browser's numbers are the library's: components/explorer_core.js, run in Chromium on the same arrays, against
neuronrank.analysis.scoring and neuronrank.views.explorer.

Integers (histogram counts, zeros, pruned fractions, Jaccard values with their shared and pruned counts, per-layer
overlaps, ties at the cut, the lowest neurons) must be identical; floats (scores, bin edges, cuts) within a relative
1e-12: V8's exp/log are not numpy's (numpy uses SVML on AVX-512 CPUs), so the last bits of a score may differ. That
can only change an integer when a score lies within ~1e-14 of a bin edge or two distinct scores straddling a cut are
that close — each case asserts its margin is far wider, so the exact comparisons cannot flip by chance.

No server: the module is loaded into a blank page (the app's transport of the arrays is tested end to end in
test_e2e_analysis.py).
"""

import base64
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from bench._appserver import CHROMIUM, CHROMIUM_ARGS
from neuronrank.analysis import scoring
from neuronrank.views import explorer as views

pytestmark = [pytest.mark.slow, pytest.mark.e2e,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")]

CORE = Path(__file__).resolve().parents[2] / "components" / "explorer_core.js"
# (α, β, γ, sparsity, layer, log x, per-layer grouping): fast paths (0, 0.5, 1, 2) and exp·ln exponents
CASES = [(1.0, 1.0, 1.0, 0.5, 3, True, True), (1.0, 1.0, 1.0, 0.3, 0, False, False), (1.5, 1.0, 1.5, 0.7, 5, True, True),
         (2.0, 0.5, 0.5, 0.3, 1, True, False), (1.0, 0.0, 0.0, 0.5, 2, True, True), (0.0, 1.0, 1.0, 0.45, 7, True, True),
         (0.0, 0.0, 0.0, 0.5, 0, True, False), (2.0, 0.5, 0.6, 0.3, 4, False, True), (0.7, 2.9, 0.1, 0.95, 6, True, False),
         (3.0, 3.0, 3.0, 0.05, 1, True, True), (0.3, 1.7, 2.2, 0.35, 2, False, True), (1.3, 0.8, 2.6, 0.65, 3, True, False)]

RUN = """([cols, L, W, cases]) => {
  const dec = (b64) => { const s = atob(b64), u = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) u[i] = s.charCodeAt(i); return new Float64Array(u.buffer); };
  const ex = new NRCore.Explorer({ w: dec(cols.w), tf: dec(cols.tf), idf: dec(cols.idf), wanda: dec(cols.wanda),
                                   nLayers: L, width: W });
  return cases.map(([a, b, g, sp, layer, log, perLayer]) => {
    const s = Array.from(ex.scores(a, b, g));
    const h = ex.histogram(0, ex.n, log), lh = ex.histogram(layer * W, (layer + 1) * W, log);
    const r = { scores: s, counts: Array.from(h.counts), edges: Array.from(h.edges), zeros: h.zeros, dropped: h.dropped,
      lcounts: Array.from(lh.counts), ledges: Array.from(lh.edges), lzeros: lh.zeros,
      cut: ex.cut(0, ex.n, sp, log), lcut: ex.cut(layer * W, (layer + 1) * W, sp, log) };
    const t = ex.layerTables(sp, perLayer);
    r.globalFrac = Array.from(t.globalFrac); r.perLayerFrac = Array.from(t.perLayerFrac); r.ties = t.ties;
    r.overlap = {};
    for (const k of ['magnitude', 'wanda']) { const o = t.overlap[k];
      r.overlap[k] = [o.jaccard, o.shared, o.pruned, Array.from(o.perLayer)]; }
    r.lowest = ex.lowestNeurons(50).map(x => [x.layer, x.neuron]);
    return r; }); }"""


def _tiny_model_arrays():
    """A real statistics pass: a tiny random Llama (4 layers × 512 neurons) over random windows."""
    from neuronrank.engine.collect import collect
    from tests.conftest import make_tiny

    model = make_tiny(layers=4, inter=512, hidden=64, vocab=96, seed=3)
    g = torch.Generator().manual_seed(5)
    windows = torch.randint(0, 96, (8, 32), generator=g)
    stats = collect(model, [windows[:4], windows[4:]], topk=2)
    return views.neuron_arrays(stats.to_frame())


def _synthetic_arrays(layers=8, width=4096, seed=0):
    """Edge cases on purpose: |W| with 16 distinct values (Q4_1-like ties), TF = 0 (zero scores), never-active
    neurons (equal, maximal IDF), a Wanda score with ties."""
    rng = np.random.default_rng(seed)
    n, tokens = layers * width, 4096
    n_active = rng.integers(0, tokens, n)
    n_active[::97] = 0
    tf = rng.gamma(2.0, 0.05, n)
    tf[::211] = 0.0
    frame = {"layer": np.repeat(np.arange(layers, dtype=np.int32), width),
             "neuron": np.tile(np.arange(width, dtype=np.int32), layers),
             "w_norm": np.round(rng.gamma(5.0, 0.2, n), 1), "tf": tf,
             "idf": np.log((tokens + 1.0) / (n_active + 1.0)) + 1.0, "n_active": n_active, "tokens": np.full(n, tokens)}
    frame["wanda"] = np.round(rng.gamma(5.0, 0.01, n), 3)
    frame["magnitude"] = frame["w_norm"]
    return frame


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    core = CORE.read_text().replace("export ", "")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        p = browser.new_page()
        p.set_content("<!doctype html><html><body></body></html>")
        p.add_script_tag(content=core + "\nwindow.NRCore = { Explorer, roundHalfEven };")
        yield p
        browser.close()


def _margin_to_edges(values: np.ndarray, edges: np.ndarray) -> float:
    """Smallest distance from a value to an inner bin edge, relative to the value or the axis' span (whichever is
    larger: a last-bit difference is relative to the value). One distinct value (every score equal) is the same
    in both by construction — no margin needed."""
    inner = edges[1:-1]
    if values.size == 0 or inner.size == 0 or values.min() == values.max():
        return np.inf
    i = np.clip(np.searchsorted(inner, values), 1, inner.size - 1)
    d = np.minimum(np.abs(values - inner[i - 1]), np.abs(values - inner[i]))
    return float(np.min(d / np.maximum(np.abs(values), edges[-1] - edges[0])))


def _gap_at_cut(s: np.ndarray, sparsity: float) -> float:
    """Relative gap between the cut's value and the nearest *different* score."""
    k = int(round(sparsity * s.size))
    if k == 0:
        return np.inf
    t = np.partition(s, k - 1)[k - 1]
    other = s[s != t]
    return float(np.min(np.abs(other - t)) / max(abs(t), 1e-300)) if other.size else np.inf


@pytest.mark.parametrize("which", ["tiny model", "synthetic with ties"])
def test_browser_numbers_equal_the_library(page, which):
    arrays = _tiny_model_arrays() if which == "tiny model" else _synthetic_arrays()
    cols = views.browser_columns(arrays)
    layers = arrays["layer"]
    L = int(layers[-1]) + 1
    W = len(layers) // L
    payload = {k: base64.b64encode(v.astype("<f8").tobytes()).decode() for k, v in cols.items()}
    cases = [(*c[:4], c[4] % L, *c[5:]) for c in CASES]  # a layer this entry has
    got = page.evaluate(RUN, [payload, L, W, [list(c) for c in cases]])
    for case, r in zip(cases, got):
        a, b, g, sp, layer, log, per_layer = case
        s, overall, one = views.score_histograms(arrays, a, b, g, layer=layer, log=log)
        rows = views.layer_slice(layers, layer)
        np.testing.assert_allclose(r["scores"], s, rtol=1e-12, atol=0, err_msg=str(case))
        # the margins that keep the exact comparisons from flipping on a last-bit difference
        for h, vals in ((overall, s), (one, s[rows])):
            v = vals[np.isfinite(vals)]
            v = np.log10(v[v > 0]) if log else v
            assert _margin_to_edges(v, h.edges) > 1e-10, case
        if len(np.unique(s)) > 1:
            assert _gap_at_cut(s, sp) > 1e-10 and _gap_at_cut(s[rows], sp) > 1e-10, case
        assert (r["counts"], r["zeros"], r["dropped"]) == (overall.counts.tolist(), overall.zeros, overall.dropped), case
        assert (r["lcounts"], r["lzeros"]) == (one.counts.tolist(), one.zeros), case
        np.testing.assert_allclose(r["edges"], overall.edges, rtol=1e-12, atol=1e-300, err_msg=str(case))
        np.testing.assert_allclose(r["ledges"], one.edges, rtol=1e-12, atol=1e-300, err_msg=str(case))
        for got_cut, want in ((r["cut"], views.prune_threshold(s, sp, log)),
                              (r["lcut"], views.prune_threshold(s[rows], sp, log))):
            assert (got_cut is None) == (want is None), case
            if want is not None:
                assert got_cut == pytest.approx(want, rel=1e-12, abs=1e-300), case
        frac = views.pruned_fraction(s, layers, sp)
        assert r["globalFrac"] == frac["global"].tolist() and r["perLayerFrac"] == frac["per_layer"].tolist(), case
        summary, per = views.ranking_overlap(s, arrays, sp, per_layer=per_layer)
        for name in views.BASELINES:
            row = summary[summary["baseline"] == views.BASELINES[name]].iloc[0]
            assert r["overlap"][name][:3] == [row["jaccard"], row["shared"], row["pruned"]], (case, name)
            assert r["overlap"][name][3] == per[name].tolist(), (case, name)
        for key, grouped in (("global", False), ("perLayer", True)):
            want = views.ties_at_cut(s, layers, sp, per_layer=grouped)
            assert r["ties"][key] == {"tied": want["tied"], "byOrder": want["by_order"], "pruned": want["pruned"]}, case
        low = views.lowest_neurons(arrays, s)
        assert r["lowest"] == low[["layer", "neuron"]].to_numpy().tolist(), case
    # the fixture exercises what it claims: ties decide part of a pruned set in some case, and α=β=γ=0 ties all
    flat = got[CASES.index((0.0, 0.0, 0.0, 0.5, 0, True, False))]
    assert flat["ties"]["global"]["tied"] == len(layers)
    if which == "synthetic with ties":
        assert any(r["ties"]["global"]["byOrder"] for r, c in zip(got, CASES) if c[:3] != (0.0, 0.0, 0.0))
        assert any(r["zeros"] for r in got)
