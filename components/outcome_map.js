// The outcome map beside the Exponents sliders: measured perplexities of NeuronRank-OLD in exponent space
// (α–γ and α–β projections, colour = ppl on a log scale), the baselines at the same sparsity, and an estimate of
// the perplexity at the sliders' point from a Gaussian process fitted in Python (neuronrank/views/outcomes.py).
// (components/explorer.py builds one ES module: common.js + explorer_core.js + this file + explorer.js.)
//
// data.outcomes from Python (only when the set of points changes does it differ): {sparsity, type, protocol,
//   min_points, points: {alpha, beta, gamma, ppl, source, ref, measured, pending, baselines, dense, skipped,
//   diverged}, posterior: {n, scale, nu, X, ls, c, noise, alpha, L, y_mean, y_std} | null}
// Every slider input evaluates the posterior's mean and variance here (gpPredict: sklearn's predict, the same
// operations in the same order) and moves the marker on both projections and the estimate on the baselines'
// chart — DOM only, no Plotly call while the hand moves. "Measure this point" sets the state `measure`.

const OM_EXPS = [['alpha', 'α'], ['beta', 'β'], ['gamma', 'γ']];
const OM_BASE_LABEL = { magnitude: 'magnitude', wanda: 'Wanda', sparsegpt: 'SparseGPT', random: 'random', ria: 'RIA',
                        flap: 'FLAP' };

// Mean and standard deviation of log ppl at (a, b, g): GaussianProcessRegressor.predict(return_std=True) for the
// kernel constant × Matérn(ν = 5/2, one length scale per input) + white noise, with normalised targets.
function gpPredict(P, a, b, g) {
  const n = P.n;
  if (!P._prep) {
    const Xs = new Float64Array(n * 3);
    for (let i = 0; i < n; i++) for (let j = 0; j < 3; j++) Xs[i * 3 + j] = P.X[i * 3 + j] / P.ls[j];
    P._prep = { Xs, L: Float64Array.from(P.L), alpha: Float64Array.from(P.alpha), k: new Float64Array(n),
                v: new Float64Array(n) };
  }
  const { Xs, L, alpha, k, v } = P._prep, s5 = Math.sqrt(5);
  const x = [a / P.scale / P.ls[0], b / P.scale / P.ls[1], g / P.scale / P.ls[2]];
  let mean = 0;
  for (let i = 0; i < n; i++) {
    let d2 = 0;
    for (let j = 0; j < 3; j++) { const d = x[j] - Xs[i * 3 + j]; d2 += d * d; }
    const K = Math.sqrt(d2) * s5;
    k[i] = P.c * ((1 + K + K * K / 3) * Math.exp(-K));
    mean += k[i] * alpha[i];
  }
  let vv = 0;
  for (let i = 0; i < n; i++) {  // forward substitution: L v = k
    let s = k[i];
    const row = i * n;
    for (let j = 0; j < i; j++) s -= L[row + j] * v[j];
    v[i] = s / L[row + i];
    vv += v[i] * v[i];
  }
  let variance = (P.c + P.noise) - vv;
  if (variance < 0) variance = 0;
  return { mean: P.y_std * mean + P.y_mean, std: Math.sqrt(variance * P.y_std * P.y_std) };
}

function omNice(x) {  // ticks of ppl between two log10 values: 1-2-5 steps, or 4 rounded values on a narrow span
  const out = [];
  for (let e = Math.floor(x[0]) - 1; e <= Math.ceil(x[1]); e++) {
    for (const m of [1, 2, 5]) { const v = m * 10 ** e; if (Math.log10(v) >= x[0] - 1e-9 && Math.log10(v) <= x[1] + 1e-9) out.push(v); }
  }
  if (out.length >= 3) return out;
  const even = [];
  for (let i = 0; i < 4; i++) even.push(Number((10 ** (x[0] + (x[1] - x[0]) * i / 3)).toPrecision(2)));
  return [...new Set(even)];
}

const omFmt = (x) => (x >= 1e5 ? x.toExponential(2) : Number(x.toPrecision(4)).toLocaleString('en'));
const omPm = (e) => Number(Math.max(e.high - e.ppl, e.ppl - e.low).toPrecision(2)).toLocaleString('en');

class OutcomeMap {
  constructor(el, readView) {
    this.el = el; this.readView = readView; this.data = null; this.present = false;
    el.classList.add('omap');
    el.hidden = true;  // until Python sends outcomes
    el.innerHTML = `
      <div class="om-head"><span class="om-title">Outcome map</span> <span class="om-scope" data-om-scope></span></div>
      <div class="om-est" data-om-est role="status" aria-live="polite"></div>
      <div class="om-row">
        <div class="om-box"><div class="om-plot" data-om-plot="gamma"></div><div class="om-cursor" data-om-cursor="gamma" hidden></div></div>
        <div class="om-box"><div class="om-plot" data-om-plot="beta"></div><div class="om-cursor" data-om-cursor="beta" hidden></div></div>
        <div class="om-box"><div class="om-plot" data-om-plot="ref"></div><div class="om-band wide" data-om-band95 hidden></div>
          <div class="om-band" data-om-band hidden></div>
          <div class="om-dot" data-om-dot hidden></div></div>
      </div>
      <div class="om-actions"><button type="button" data-om-measure>Measure this point</button>
        <span class="om-note" data-om-note></span></div>
      <ul class="om-measured" data-om-measured></ul>`;
    this.q = (s) => el.querySelector(s);
    this.resizer = new ResizeObserver(() => { this.layoutResized(); });
    for (const p of el.querySelectorAll('[data-om-plot]')) this.resizer.observe(p);
    this.q('[data-om-measure]').addEventListener('click', () => this.measure());
  }

  setData(d, present, setState, entry) {
    this.setState = setState; this.entry = entry;
    if (d && d.posterior_sig) {  // the posterior comes once per change; later runs name it by its signature
      NR.posteriors = NR.posteriors || new Map();
      if (d.posterior) {
        NR.posteriors.set(d.posterior_sig, d.posterior);
        while (NR.posteriors.size > 2) NR.posteriors.delete(NR.posteriors.keys().next().value);
      }
      const held = NR.posteriors.get(d.posterior_sig) || null;
      if (!held) {  // lost (a reload, a new instance): ask Python for it (a few times at most)
        NR.askedPosterior = NR.askedPosterior || {};
        if ((NR.askedPosterior[d.posterior_sig] = (NR.askedPosterior[d.posterior_sig] || 0) + 1) <= 3) {
          setState('need', { entry, posterior: true, nonce: Date.now() + Math.random() });
        }
      }
      d = { ...d, posterior: held };
    }
    const sig = JSON.stringify({ ...d, posterior: d && d.posterior_sig }) + present;  // same outcomes: no redraw
    this.data = d;  // (a posterior that arrived later, under the same signature, is taken without a redraw)
    if (sig !== this.sig) {
      this.sig = sig; this.present = !!present;
      this.draw();
    }
    this.follow();
  }

  draw() {
    const d = this.data, P = window.Plotly;
    this.el.hidden = !d;
    if (!d || !P) return;
    const st = chartStyle(this.present, this.el), pts = d.points;
    this.el.classList.toggle('present', this.present);
    this.q('[data-om-scope]').textContent = `NeuronRank-OLD at ${+(d.sparsity * 100).toFixed(1)} % ${d.type} · ` +
      `perplexity on ${d.protocol} · ${pts.ppl.length} measured point${pts.ppl.length === 1 ? '' : 's'}`;
    const logs = pts.ppl.map(Math.log10), all = [...logs];
    for (const v of Object.values(pts.baselines)) all.push(Math.log10(v));
    if (pts.dense) all.push(Math.log10(pts.dense));
    this.crange = logs.length ? [Math.min(...logs), Math.max(...logs)] : [1, 2];
    if (this.crange[1] - this.crange[0] < 1e-6) this.crange = [this.crange[0] - 0.1, this.crange[1] + 0.1];
    const ticks = omNice(this.crange);
    const measuredRuns = new Set(pts.measured.map(m => m.run));
    // Plotly reads hover text as its pseudo-HTML: a stored name is shown without markup characters
    const hover = pts.ref.map((r, i) => `${String(r).replace(/[<>&"]/g, '')} (${pts.source[i]})<br>α ${pts.alpha[i]} · β ${pts.beta[i]} · γ ${pts.gamma[i]}` +
                                       `<br>ppl ${omFmt(pts.ppl[i])}`);
    const height = this.present ? 380 : 320;
    for (const [axis, label] of [['gamma', 'γ'], ['beta', 'β']]) {
      const lim = (k) => [-0.1, Math.max(3, ...pts[k]) + 0.1];
      const traces = [{
        type: 'scatter', mode: 'markers', x: pts.alpha, y: pts[axis], text: hover, hovertemplate: '%{text}<extra></extra>',
        name: 'measured', marker: { size: this.present ? 14 : 11, color: logs, cmin: this.crange[0], cmax: this.crange[1],
          colorscale: 'Viridis', reversescale: true, line: { width: 1, color: '#333' },
          showscale: axis === 'beta', colorbar: { title: { text: 'ppl', font: { size: st.axisTitle } }, tickvals: ticks.map(Math.log10),
            ticktext: ticks.map(omFmt), tickfont: { ...st.tick }, len: 0.9, thickness: 14 } } }];
      if (pts.measured.length) {
        traces.push({ type: 'scatter', mode: 'markers', x: pts.measured.map(m => m.alpha), y: pts.measured.map(m => m[axis]),
          name: 'measured here (estimate shown before)', hoverinfo: 'skip',
          marker: { symbol: 'diamond-open', size: this.present ? 22 : 18, line: { width: 2.5, color: '#c62828' } } });
      }
      if (pts.pending.length) {
        traces.push({ type: 'scatter', mode: 'markers', x: pts.pending.map(m => m.alpha), y: pts.pending.map(m => m[axis]),
          name: 'being measured', hovertemplate: 'being measured<extra></extra>',
          marker: { symbol: 'circle-open-dot', size: this.present ? 20 : 16, line: { width: 2, color: '#e65100' } } });
      }
      P.react(this.q(`[data-om-plot="${axis}"]`), traces, {
        title: { text: `α–${label}`, font: { size: st.title, color: st.font.color }, x: 0, xanchor: 'left' },
        font: st.font, height, showlegend: false, margin: { l: 10, r: 10, t: 40, b: 10 },
        xaxis: styleAxis({ title: { text: 'α (|W|)' }, range: lim('alpha'), zeroline: false }, st),
        yaxis: styleAxis({ title: { text: label === 'γ' ? 'γ (IDF)' : 'β (TF)' }, range: lim(axis), zeroline: false }, st),
        hoverlabel: { font: { size: st.tick.size } },
      }, plotConfig(`outcome_map_alpha_${axis}`, this.present));
    }
    // the estimate against the baselines at this sparsity: one row each, ppl on a log axis
    const rows = ['estimate here', 'NeuronRank-OLD measured'];
    const bx = [], by = [], bt = [];
    const base = Object.entries(pts.baselines).sort((a, b) => a[1] - b[1]);
    for (const [m, v] of base) { const name = OM_BASE_LABEL[m] || m; rows.push(name); bx.push(v); by.push(name); bt.push(omFmt(v)); }
    if (pts.dense) { rows.push('dense'); bx.push(pts.dense); by.push('dense'); bt.push(omFmt(pts.dense)); }
    this.refRows = rows;
    const lo = all.length ? Math.min(...all) : 1, hi = all.length ? Math.max(...all) : 2;
    this.refRange = [lo - 0.15 - 0.05 * (hi - lo), hi + 0.25 + 0.05 * (hi - lo)];
    P.react(this.q('[data-om-plot="ref"]'), [
      { type: 'scatter', mode: 'markers', x: [10 ** ((lo + hi) / 2)], y: [rows[0]], hoverinfo: 'skip', name: 'estimate row',
        marker: { opacity: 0 } },  // the estimate's row (its dot and band are drawn over the plot, see place)
      { type: 'scatter', mode: 'markers', x: pts.ppl, y: pts.ppl.map(() => rows[1]), name: 'measured',
        marker: { size: 9, color: '#4c78a8', opacity: 0.6 }, hovertemplate: 'ppl %{x:.4g}<extra>NeuronRank-OLD</extra>' },
      { type: 'scatter', mode: 'markers+text', x: bx, y: by, text: bt, textposition: 'top center', name: 'baselines',
        textfont: { size: st.tick.size, color: st.font.color }, cliponaxis: false,
        marker: { size: 12, symbol: 'line-ns-open', line: { width: 3, color: '#54a24b' } },
        hovertemplate: '%{y}: ppl %{x:.4g}<extra></extra>' },
    ], {
      title: { text: 'Estimate vs baselines, same sparsity', font: { size: st.title, color: st.font.color }, x: 0, xanchor: 'left' },
      font: st.font, height, showlegend: false, margin: { l: 10, r: 16, t: 40, b: 10 },
      xaxis: styleAxis({ title: { text: 'perplexity (log)' }, type: 'log', range: this.refRange,
                         tickvals: omNice(this.refRange), ticktext: omNice(this.refRange).map(omFmt) }, st),
      yaxis: styleAxis({ type: 'category', categoryorder: 'array', categoryarray: [...rows].reverse(), range: [-0.5, rows.length - 0.5] }, st),
      hoverlabel: { font: { size: st.tick.size } },
    }, plotConfig('outcome_map_baselines', this.present));
    this.drawMeasured();
    requestAnimationFrame(() => this.follow());  // the axes exist now: place the markers
  }

  drawMeasured() {
    const ul = this.q('[data-om-measured]'), pts = this.data.points;
    ul.textContent = '';
    const at = (m) => `α=${+m.alpha.toFixed(3)}, β=${+m.beta.toFixed(3)}, γ=${+m.gamma.toFixed(3)}`;
    for (const m of pts.pending) {
      const li = document.createElement('li');
      li.textContent = `Run ${m.run} at ${at(m)}: ${m.status === 'queued' ? 'queued' : 'being measured'} — estimated ` +
        `${omFmt(m.estimate.ppl)} ± ${omPm(m.estimate)} when it was queued`;
      li.dataset.run = String(m.run); li.dataset.state = 'pending';
      ul.appendChild(li);
    }
    for (const m of pts.measured.slice().reverse()) {
      const li = document.createElement('li');
      li.textContent = `Run ${m.run} at ${at(m)}: estimated ${omFmt(m.estimate.ppl)} ± ${omPm(m.estimate)}, measured ${omFmt(m.ppl)}`;
      li.dataset.run = String(m.run); li.dataset.state = 'measured';
      ul.appendChild(li);
    }
    const notes = [];
    if (pts.diverged) notes.push(`${pts.diverged} measurement${pts.diverged === 1 ? '' : 's'} diverged (infinite perplexity), not fitted`);
    if (pts.skipped) notes.push(`${pts.skipped} unreadable record${pts.skipped === 1 ? '' : 's'} skipped`);
    this.notes = notes;
  }

  // Every slider input: the estimate at the sliders' point, the markers moved (DOM only).
  follow() {
    const d = this.data;
    if (!d || !this.readView) return;
    const v = this.readView(), est = this.q('[data-om-est]'), P = d.posterior;
    const sameSparsity = Math.abs(v.sparsity - d.sparsity) < 1e-9;
    NR.outcomes = NR.outcomes || {};
    let e = null;
    if (!sameSparsity) {
      est.textContent = `The map shows ${+(d.sparsity * 100).toFixed(1)} % sparsity: it follows ${+(v.sparsity * 100).toFixed(1)} % ` +
        'when the slider is released.';
    } else if (!P) {
      est.textContent = `No estimate: ${d.points.ppl.length} measured point${d.points.ppl.length === 1 ? '' : 's'} here, an ` +
        `estimate needs at least ${d.min_points}. Measure points (below), or run a sweep or a search at this sparsity.`;
    } else {
      const t0 = performance.now();
      const g = gpPredict(P, v.alpha, v.beta, v.gamma);
      const ms = performance.now() - t0;
      e = { alpha: v.alpha, beta: v.beta, gamma: v.gamma, log_mean: g.mean, log_std: g.std, ppl: Math.exp(g.mean),
            low: Math.exp(g.mean - g.std), high: Math.exp(g.mean + g.std), low95: Math.exp(g.mean - 1.96 * g.std),
            high95: Math.exp(g.mean + 1.96 * g.std), points: P.n, ms };
      est.textContent = `Estimate at α = ${+v.alpha.toFixed(3)}, β = ${+v.beta.toFixed(3)}, γ = ${+v.gamma.toFixed(3)}: ` +
        `ppl ≈ ${omFmt(e.ppl)} (68 %: ${omFmt(e.low)}–${omFmt(e.high)}; 95 %: ${omFmt(e.low95)}–${omFmt(e.high95)}), ` +
        `a Gaussian-process estimate from ${P.n} measured points — not a measurement.`;
    }
    est.dataset.kind = e ? 'estimate' : 'none';
    NR.outcomes.estimate = e;
    NR.outcomes.view = v;
    this.estimateNow = e;
    this.q('[data-om-note]').textContent = [sameSparsity ? '' : 'release the sparsity slider first', ...(this.notes || [])]
      .filter(Boolean).join(' · ');
    this.q('[data-om-measure]').disabled = !sameSparsity || !this.setState;
    this.place(v, e);
  }

  place(v, e) {
    for (const axis of ['gamma', 'beta']) {
      const gd = this.q(`[data-om-plot="${axis}"]`), c = this.q(`[data-om-cursor="${axis}"]`), L = gd._fullLayout;
      if (!L || !L.xaxis || !L.yaxis) { c.hidden = true; continue; }
      const x = L.xaxis._offset + L.xaxis.l2p(v.alpha), y = L.yaxis._offset + L.yaxis.l2p(v[axis]);
      c.hidden = false;
      c.style.transform = `translate(${x}px, ${y}px)`;
      c.dataset.alpha = String(v.alpha); c.dataset.y = String(v[axis]);
      c.title = `the sliders' point: α ${v.alpha}, ${axis === 'gamma' ? 'γ' : 'β'} ${v[axis]}`;
    }
    const gd = this.q('[data-om-plot="ref"]'), L = gd._fullLayout, dot = this.q('[data-om-dot]'), band = this.q('[data-om-band]');
    const band95 = this.q('[data-om-band95]');
    if (!e || !L || !L.xaxis || !L.yaxis) { dot.hidden = band.hidden = band95.hidden = true; return; }
    const xa = L.xaxis, ya = L.yaxis, left = xa._offset, right = xa._offset + xa._length;
    const px = (p) => Math.min(Math.max(xa._offset + xa.l2p(Math.log10(p)), left), right);
    const y = ya._offset + ya.l2p(ya.d2c(this.refRows[0]));
    const x0 = px(e.low), x1 = px(e.high);
    band.hidden = dot.hidden = band95.hidden = false;
    const w0 = px(e.low95), w1 = px(e.high95);
    band95.style.transform = `translate(${w0}px, ${y}px)`; band95.style.width = `${Math.max(w1 - w0, 2)}px`;
    band95.title = `95 %: ${omFmt(e.low95)}–${omFmt(e.high95)}`;
    band.style.transform = `translate(${x0}px, ${y}px)`; band.style.width = `${Math.max(x1 - x0, 2)}px`;
    dot.style.transform = `translate(${px(e.ppl)}px, ${y}px)`;
    dot.title = `estimate ${omFmt(e.ppl)} (68 %: ${omFmt(e.low)}–${omFmt(e.high)})`;
  }

  layoutResized() {
    if (this.data && window.Plotly) {
      for (const p of this.el.querySelectorAll('[data-om-plot]')) if (p._fullLayout) window.Plotly.Plots.resize(p);
      this.follow();
    }
  }

  measure() {
    const v = this.readView();
    if (!this.setState || !this.data) return;
    this.q('[data-om-note]').textContent = 'queuing a prune run at this point…';
    this.setState('measure', { entry: this.entry, alpha: v.alpha, beta: v.beta, gamma: v.gamma, sparsity: v.sparsity,
                               shown: this.estimateNow ? this.estimateNow.ppl : null, nonce: Date.now() + Math.random() });
  }
}
