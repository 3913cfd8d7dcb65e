// The Exponents explorer in the browser: controls, Plotly charts, the protocol with Python.
// (components/explorer.py builds one ES module: common.js + explorer_core.js + this file.)
//
// data from Python: {entry, n_layers, width, view: {alpha, beta, gamma, sparsity, layer, log, grouping}, rev,
//   present, arrays? (once per tab and entry), plotly_js? (once per tab)}
// state back to Python: view (when a drag or a burst of key presses ends: one rerun), need (see common.js).
// A view from Python (presets, the URL, "Apply best") is applied only when `rev` changed; otherwise the browser's
// own controls are the truth, so a late echo of an older view never moves a slider back.

const SLIDERS = [
  ['alpha', 'α (|W| exponent)', 0, 3, 0.1],
  ['beta', 'β (TF exponent)', 0, 3, 0.1],
  ['gamma', 'γ (IDF exponent)', 0, 3, 0.1],
  ['sparsity', 'sparsity (fraction pruned)', 0, 0.95, 0.05],
];
const BASELINES = [['magnitude', 'magnitude'], ['wanda', 'Wanda']];
const LOWEST_N = 50;
const CUT_COLOR = '#c62828';

function buildDom(parent) {
  const root = document.createElement('div');
  root.className = 'nrx';
  root.innerHTML = `
    <div class="sliders">${SLIDERS.map(([k, label, lo, hi, step]) => `
      <label class="ctl"><span class="lbl">${label} <output data-out="${k}"></output></span>
        <input type="range" data-k="${k}" aria-label="${label}" min="${lo}" max="${hi}" step="${step}"></label>`).join('')}
    </div>
    <div data-outcome-map></div>
    <div class="options">
      <label><input type="checkbox" data-k="log"> log x (log₁₀ score)</label>
      <label>Layer (right chart) <select data-k="layer" aria-label="Layer"></select></label>
    </div>
    <div class="warn" data-ties role="status" hidden></div>
    <div class="row2"><div class="plot" data-plot="hist_all"></div><div class="plot" data-plot="hist_layer"></div></div>
    <h3 data-h="frac"></h3>
    <div class="plot" data-plot="frac"></div>
    <h3>Overlap with magnitude and Wanda rankings</h3>
    <p class="note">Neuron-level baselines: magnitude = ‖gate_proj row‖₂; Wanda = mean |down_proj column| × ‖x‖₂ of
      its input (FLAP's wanda-sp, the score structured Wanda prunes by). Jaccard = shared ÷ pruned by either.</p>
    <div class="options" role="radiogroup" aria-label="Compare pruned sets chosen">
      <span>Compare pruned sets chosen</span>
      <label><input type="radio" name="grouping" value="per layer" data-k="grouping"> per layer (structured pruning)</label>
      <label><input type="radio" name="grouping" value="globally" data-k="grouping"> over the whole model</label>
    </div>
    <div class="metrics" data-metrics></div>
    <div class="plot" data-plot="overlap"></div>
    <h3>The ${LOWEST_N} lowest-scoring neurons</h3>
    <div class="tablewrap"><table data-lowest><thead><tr><th>rank</th><th>layer</th><th>neuron</th><th>TF</th>
      <th>IDF</th><th>|W|</th><th>score</th></tr></thead><tbody></tbody></table></div>
    <p class="status" data-status></p>`;
  parent.appendChild(root);
  return root;
}

const q = (root, sel) => root.querySelector(sel);

function readView(root) {
  const v = {};
  for (const [k] of SLIDERS) v[k] = parseFloat(q(root, `input[data-k="${k}"]`).value);
  v.log = q(root, 'input[data-k="log"]').checked;
  v.layer = parseInt(q(root, 'select[data-k="layer"]').value || '0', 10);
  const g = q(root, 'input[data-k="grouping"]:checked');
  v.grouping = g ? g.value : 'per layer';
  return v;
}

function writeView(root, v, nLayers) {
  const sel = q(root, 'select[data-k="layer"]');
  if (sel.options.length !== nLayers) {
    sel.textContent = '';
    for (let i = 0; i < nLayers; i++) sel.appendChild(new Option(String(i), String(i)));
  }
  for (const [k, , lo, hi, step] of SLIDERS) {
    const inp = q(root, `input[data-k="${k}"]`), x = Math.min(Math.max(Number(v[k]), lo), hi);
    // a value off the slider's grid (an "Apply best" of 1.234) is kept exactly until the hand moves the slider
    const onGrid = Math.abs(x / step - Math.round(x / step)) < 1e-9;
    inp.step = onGrid ? String(step) : 'any';
    inp.dataset.step = String(step);
    inp.value = String(x);
  }
  q(root, 'input[data-k="log"]').checked = !!v.log;
  sel.value = String(Math.min(Math.max(v.layer | 0, 0), nLayers - 1));
  for (const r of root.querySelectorAll('input[data-k="grouping"]')) r.checked = r.value === v.grouping;
  showValues(root);
}

function showValues(root) {
  for (const [k] of SLIDERS) {
    const x = parseFloat(q(root, `input[data-k="${k}"]`).value);
    q(root, `output[data-out="${k}"]`).textContent = k === 'sparsity' ? `${+(x * 100).toFixed(1)} %` : `${+x.toFixed(3)}`;
  }
}

function histFigure(h, title, cut, cutLabel, st, present) {
  const n = h.counts.length, centers = new Float64Array(n), widths = new Float64Array(n);
  for (let i = 0; i < n; i++) { centers[i] = (h.edges[i] + h.edges[i + 1]) / 2; widths[i] = h.edges[i + 1] - h.edges[i]; }
  const xTitle = h.log ? 'log₁₀ score' : 'score';
  const notes = [];
  if (h.log && h.zeros) notes.push(`${int(h.zeros)} zero scores not shown`);
  if (h.dropped) notes.push(`${int(h.dropped)} non-finite scores not shown`);
  const lo = h.edges[0], hi = h.edges[n];
  const layout = {
    title: { text: title + (notes.length ? `<br><span style="font-size:0.8em">(${notes.join('; ')})</span>` : ''),
             font: { size: st.title, color: st.font.color }, x: 0, xanchor: 'left', y: 0.98, yanchor: 'top' },
    bargap: 0, showlegend: false, font: st.font,
    // the axis spans the data: the cut line and its label live inside it, never stretch it
    xaxis: styleAxis({ title: { text: xTitle }, range: [lo, hi], autorange: false }, st),
    yaxis: styleAxis({ title: { text: 'neurons' }, rangemode: 'tozero' }, st),
    margin: { l: 10, r: 16, t: notes.length ? 70 : 44, b: 10 }, height: present ? 400 : 340,
    shapes: [], annotations: [], hoverlabel: { font: { size: st.tick.size } },
  };
  if (cut !== null) {
    const right = (cut - lo) > (hi - lo) / 2;  // the label on the side with room, inside the plot
    layout.shapes.push({ type: 'line', xref: 'x', yref: 'paper', x0: cut, x1: cut, y0: 0, y1: 1,
                         line: { color: CUT_COLOR, dash: 'dash', width: 2 } });
    layout.annotations.push({ x: cut, xref: 'x', y: 1, yref: 'paper', yanchor: 'top', xanchor: right ? 'right' : 'left',
                              xshift: right ? -4 : 4, showarrow: false, text: `← ${cutLabel}`,
                              font: { color: CUT_COLOR, size: st.tick.size }, bgcolor: 'rgba(255,255,255,0.85)' });
  }
  const trace = { type: 'bar', x: centers, y: h.counts, width: widths, marker: { line: { width: 0 }, color: '#4c78a8' },
                  name: title, hovertemplate: `${xTitle} %{x:.4g}<br>neurons %{y:,}<extra></extra>` };
  return [[trace], layout];
}

function lineFigure(traces, title, yTitle, yExtra, st, present) {
  return [traces, {
    title: { text: title, font: { size: st.title, color: st.font.color }, x: 0, xanchor: 'left' },
    font: st.font, height: present ? 380 : 330, margin: { l: 10, r: 16, t: 80, b: 10 },
    legend: { orientation: 'h', x: 0, y: 1.0, yanchor: 'bottom', font: { size: st.tick.size } },
    xaxis: styleAxis({ title: { text: 'layer' }, tickformat: 'd', zeroline: false }, st),
    yaxis: styleAxis({ title: { text: yTitle }, ...yExtra }, st),
    hoverlabel: { font: { size: st.tick.size } },
  }];
}

class Instance {
  constructor(parent) {
    this.parent = parent;
    this.root = buildDom(parent);
    this.plots = {};
    for (const el of this.root.querySelectorAll('[data-plot]')) this.plots[el.dataset.plot] = el;
    this.resizer = resizeObserver();
    this.raf = 0; this.restTimer = 0; this.sendTimer = 0; this.appliedRev = undefined;
    this.lastEnd = -1e9; this.restAt = 0; this.dragging = false; this.present = false;
    // while a pointer drags a slider, inputs only mark the view dirty (the event returns at once and the next
    // frame computes the latest value); a key press after a quiet moment is computed at once
    const unsnap = (e) => { const t = e.target; if (t.matches && t.matches('input[type=range]') && t.step === 'any') t.step = t.dataset.step; };
    this.root.addEventListener('pointerdown', (e) => { unsnap(e); this.dragging = true; });
    this.root.addEventListener('keydown', unsnap, true);
    this.onPointerUp = () => { this.dragging = false; this.drawLayerIfBehind(); };
    this.open();
    this.root.addEventListener('input', (e) => { if (e.target.matches('input[type=range]')) showValues(this.root); this.kick(); });
    this.map = new OutcomeMap(q(this.root, '[data-outcome-map]'), () => readView(this.root));  // outcome_map.js
    this.root.addEventListener('input', () => this.map.follow());
    this.root.addEventListener('change', () => { this.kick(); this.sendLater(); });
  }

  open() {  // (again after a cleanup: the instance lives on the shadow root)
    if (this.opened) return;
    this.opened = true;
    for (const el of Object.values(this.plots)) this.resizer.observe(el);
    window.addEventListener('pointerup', this.onPointerUp, true);
  }

  close() {
    this.opened = false;
    cancelAnimationFrame(this.raf); this.raf = 0; clearTimeout(this.restTimer); this.restQueued = false;
    this.resizer.disconnect(); window.removeEventListener('pointerup', this.onPointerUp, true);
  }

  kick() {
    const now = performance.now();
    this.inputGap = now - (this.lastInput || -1e9); this.lastInput = now;
    if (this.raf) return;
    if (!this.dragging && now - this.lastEnd > 4) this.update();
    else this.schedule();
  }

  schedule() {
    if (!this.raf) this.raf = requestAnimationFrame(() => { this.raf = 0; this.update(); });
  }

  sendLater() {  // Python hears the view once the hand stops (one rerun, not one per input)
    clearTimeout(this.sendTimer);
    this.sendTimer = setTimeout(() => {
      if (this.setState) this.setState('view', { ...readView(this.root), entry: this.entry });
    }, 250);
  }

  update(force) {
    const ex = this.ex, P = window.Plotly;
    if (!ex || !P) return;
    const v = readView(this.root);
    const sig = JSON.stringify(v) + this.present;
    if (!force && sig === this.sig && ex === this.sigEx) return;  // 'change' right after 'input': nothing new
    this.sig = sig; this.sigEx = ex;
    const st = chartStyle(this.present, this.root), t = {};
    const T0 = performance.now();
    ex.scores(v.alpha, v.beta, v.gamma);
    const T1 = performance.now();
    const W = ex.width, lo = v.layer * W, hi = lo + W;
    const hAll = ex.histogram(0, ex.n, v.log), hLay = ex.histogram(lo, hi, v.log);
    const T2 = performance.now();
    const cAll = ex.cut(0, ex.n, v.sparsity, v.log), cLay = ex.cut(lo, hi, v.sparsity, v.log);
    const T3 = performance.now();
    const pct = `${+(v.sparsity * 100).toFixed(1)} %`;
    P.react(this.plots.hist_all, ...histFigure(hAll, `Scores, all ${int(ex.n)} neurons`, cAll, `${pct} pruned (global cut)`, st, this.present),
            plotConfig('score_histogram', this.present));
    if (this.layerTurn()) {
      P.react(this.plots.hist_layer, ...histFigure(hLay, `Scores, layer ${v.layer}`, cLay, `${pct} pruned (layer cut)`, st, this.present),
              plotConfig(`score_histogram_layer${v.layer}`, this.present));
    }
    const T4 = performance.now();
    this.lastEnd = T4;
    Object.assign(t, { scores: T1 - T0, hist: T2 - T1, cut: T3 - T2, draw: T4 - T3, histograms: T4 - T0 });
    NR.explorer = NR.explorer || { log: [] };
    NR.explorer.firstDrawn = NR.explorer.firstDrawn || performance.now();
    this.result = { view: v, counts: Array.from(hAll.counts), edges: Array.from(hAll.edges), zeros: hAll.zeros,
                    dropped: hAll.dropped, lcounts: Array.from(hLay.counts), ledges: Array.from(hLay.edges),
                    lzeros: hLay.zeros, cut: cAll, lcut: cLay };
    this.lastView = v; this.lastT = t;
    // The rest after the histograms' frame is painted (rAF, then a task); while inputs stream in (a held key) the
    // per-layer charts and tables follow at most every 300 ms (a pointer drag: 600 ms), and always once they stop.
    if (this.restQueued) return;
    this.restQueued = true;
    const streaming = this.dragging || this.inputGap < 150;
    requestAnimationFrame(() => {
      const wait = Math.max(0, this.restAt + (this.dragging ? 600 : streaming ? 300 : 0) - performance.now());
      this.restTimer = setTimeout(() => { this.restQueued = false; this.rest(this.lastView, this.lastT); }, wait);
    });
  }

  // While a pointer drags, the layer histogram is redrawn on every second update (a Plotly redraw is most of an
  // update's time: the all-neurons histogram then keeps the display's pace on a slow machine); when the hand lets
  // go, a layer chart that is behind is drawn at once.
  layerTurn() {
    this.layerSkips = this.dragging && !this.layerSkips ? 1 : 0;
    this.layerBehind = this.layerSkips === 1;
    return !this.layerBehind;
  }

  drawLayerIfBehind() {
    if (!this.layerBehind) return;
    this.layerBehind = false; this.layerSkips = 0;
    this.sig = null;  // the same view, drawn in full
    this.schedule();
  }

  rest(v, t) {
    const ex = this.ex, P = window.Plotly, st = chartStyle(this.present, this.root);
    if (!ex || !P) return;
    const R0 = performance.now();
    this.restAt = R0;
    const tabs = ex.layerTables(v.sparsity, v.grouping === 'per layer');
    const low = ex.lowestNeurons(LOWEST_N);
    const R1 = performance.now();
    const layers = Float64Array.from({ length: ex.nLayers }, (_, i) => i);
    const pct = `${+(v.sparsity * 100).toFixed(1)} %`;
    q(this.root, '[data-h="frac"]').textContent = `Which layers lose neurons at ${pct} sparsity`;
    P.react(this.plots.frac, ...lineFigure([
      { type: 'bar', x: layers, y: tabs.globalFrac, name: 'one global threshold', marker: { color: '#4c78a8' },
        hovertemplate: 'layer %{x}: %{y:.1%} pruned<extra>global threshold</extra>' },
      { type: 'scatter', mode: 'lines+markers', x: layers, y: tabs.perLayerFrac, name: 'a threshold per layer',
        line: { color: '#f58518', width: 3 }, hovertemplate: 'layer %{x}: %{y:.1%} pruned<extra>per-layer threshold</extra>' },
    ], 'Pruned fraction per layer: global vs per-layer threshold', "fraction of the layer pruned",
       { tickformat: '.0%', rangemode: 'tozero' }, st, this.present), plotConfig('pruned_fraction_per_layer', this.present));
    P.react(this.plots.overlap, ...lineFigure(BASELINES.map(([name, label], i) => ({
      type: 'scatter', mode: 'lines+markers', x: layers, y: tabs.overlap[name].perLayer, name: label,
      line: { color: i ? '#54a24b' : '#b279a2', width: 3 }, hovertemplate: `layer %{x}: Jaccard %{y:.3f}<extra>${label}</extra>` })),
      `Overlap of the pruned sets per layer (${v.grouping === 'per layer' ? 'chosen per layer' : 'chosen over the whole model'})`,
      'Jaccard overlap', { range: [0, 1.02] }, st, this.present), plotConfig('overlap_per_layer', this.present));
    const m = q(this.root, '[data-metrics]');
    m.textContent = '';
    for (const [name, label] of BASELINES) {
      const o = tabs.overlap[name], d = document.createElement('div');
      d.className = 'metric';
      for (const [cls, text] of [['mlabel', `Jaccard with ${label}`], ['mvalue', o.jaccard.toFixed(3)],
        ['mhelp', `${int(o.shared)} of ${int(o.pruned)} pruned neurons shared`]]) {
        const e = document.createElement('div'); e.className = cls; e.textContent = text; d.appendChild(e);
      }
      m.appendChild(d);
    }
    this.showTies(tabs.ties, v, tabs.globalFrac);
    const tb = q(this.root, '[data-lowest] tbody');
    tb.textContent = '';
    for (const r of low) {  // numbers only, as text
      const tr = document.createElement('tr');
      for (const x of [r.rank, r.layer, r.neuron, fmtNumber(r.tf), fmtNumber(r.idf), fmtNumber(r.w_norm), fmtNumber(r.score)]) {
        const td = document.createElement('td'); td.textContent = String(x); tr.appendChild(td);
      }
      tb.appendChild(tr);
    }
    const R2 = performance.now();
    this.lastEnd = R2;
    Object.assign(t, { tables: R1 - R0, draw_rest: R2 - R1 });
    Object.assign(this.result, {
      globalFrac: Array.from(tabs.globalFrac), perLayerFrac: Array.from(tabs.perLayerFrac),
      overlap: Object.fromEntries(Object.entries(tabs.overlap).map(([k, o]) => [k, { jaccard: o.jaccard, shared: o.shared,
        pruned: o.pruned, perLayer: Array.from(o.perLayer) }])),
      ties: tabs.ties, lowest: low.map(r => [r.layer, r.neuron]) });
    NR.explorer.result = this.result;
    NR.explorer.log.push(t);
    if (NR.explorer.log.length > 500) NR.explorer.log.splice(0, 250);
    q(this.root, '[data-status]').textContent = `Computed in this browser: scores ${t.scores.toFixed(0)} ms · histograms ` +
      `${t.hist.toFixed(0)} ms · cut ${t.cut.toFixed(0)} ms · drawing ${t.draw.toFixed(0)} ms · tables ${t.tables.toFixed(0)} ms.`;
  }

  // Scores that tie at the cut: the pruned set is then chosen by position (layer 0 first), not by the score.
  showTies(ties, v, globalFrac) {
    const box = q(this.root, '[data-ties]'), parts = [];
    for (const [name, tt] of [['the global threshold', ties.global], ['the per-layer thresholds', ties.perLayer]]) {
      if (tt.byOrder > 0 && tt.byOrder >= 0.01 * tt.pruned) {
        parts.push(`${name}: ${int(tt.byOrder)} of its ${int(tt.pruned)} pruned neurons were picked by position ` +
                   `among ${int(tt.tied)} with the same score`);
      }
    }
    box.hidden = !parts.length;
    if (!parts.length) return;
    if (ties.global.tied === this.ex.n) {
      const whole = [];
      for (let l = 0; l < globalFrac.length; l++) if (globalFrac[l] === 1) whole.push(l);
      const span = whole.length ? ` (here layers ${whole[0]}–${whole[whole.length - 1]})` : '';
      box.textContent = `Every neuron has the same score (α = ${v.alpha}, β = ${v.beta}, γ = ${v.gamma}): the ranking ` +
        `is only the neurons' order, layer 0 and neuron 0 first. The global threshold prunes whole layers in index ` +
        `order${span}, and the overlaps below compare that order with the baselines — move an exponent above 0.`;
    } else {
      box.textContent = `Scores tie at the cut, so position decides part of the pruned set (layer 0 and neuron 0 ` +
        `first): ${parts.join('; ')}.`;
    }
  }

  setPresent(present) {
    this.present = !!present;
    this.root.classList.toggle('present', this.present);
  }
}

export default function (component) {
  const { data, parentElement, setStateValue } = component;
  if (!data || !data.entry) return;
  const inst = parentElement.__nrx || (parentElement.__nrx = new Instance(parentElement));
  inst.setState = setStateValue;  // the latest callbacks (a re-invocation does not call the previous cleanup)
  inst.open();
  inst.entry = data.entry;
  const ent = entryArrays(data), plotly = ensurePlotly(data);
  if (!ent || !plotly) {
    askFor(setStateValue, data, ent, plotly);
    if (!ent || !plotly) return;
  }
  if (!ent.shared.explorer) {
    const c = ent.cols;
    ent.shared.explorer = new Explorer({ w: c.w, tf: c.tf, idf: c.idf, wanda: c.wanda, nLayers: data.n_layers, width: data.width });
    NR.explorer = NR.explorer || { log: [] };
    NR.explorer.arrivedAt = Date.now();
  }
  let changed = inst.ex !== ent.shared.explorer || !inst.drawn || inst.present !== !!data.present;
  inst.ex = ent.shared.explorer;
  inst.setPresent(data.present);
  if (data.rev !== inst.appliedRev) { writeView(inst.root, data.view, data.n_layers); inst.appliedRev = data.rev; changed = true; }
  inst.map.setData(data.outcomes || null, data.present, setStateValue, data.entry);
  // an echo of the browser's own view (same rev) changes nothing: no recomputation
  if (changed) {
    adoptPlotlyCss(parentElement);
    inst.drawn = true;
    inst.sig = null;
    inst.schedule();
    requestAnimationFrame(() => requestAnimationFrame(() => adoptPlotlyCss(parentElement)));
  }
  return () => inst.close();  // the view Python has not heard yet still goes (sendTimer is left running)
}
