// Shared by the app's browser components (components/browser.py prepends this file to each one's module).
//
// What arrives once per browser tab, not with every rerun:
//   - Plotly.js (data.plotly_js: the plotly package's own plotly.min.js, never the network), evaluated once;
//   - an entry's neuron arrays (data.arrays: an Arrow table of float64 columns w, tf, idf, wanda), kept in
//     `window` by entry key (two entries at most) and shared by every component of the tab.
// A component that lacks either asks for it: it sets its state `need` = {entry, arrays, plotly, nonce} and
// Python sends it again (a reconnect, a cleared cache).

const NR = (window.__nr = window.__nr || { entries: new Map(), plotlyEvalMs: null, need: 0 });

function ensurePlotly(data) {
  if (window.Plotly) return window.Plotly;
  if (data.plotly_js) {
    const t0 = performance.now();
    const s = document.createElement('script');
    s.textContent = data.plotly_js;  // a classic script: its UMD wrapper sets window.Plotly
    document.head.appendChild(s);
    NR.plotlyEvalMs = performance.now() - t0;
  }
  return window.Plotly || null;
}

// The arrays of `entry` (Float64Arrays by column name), from data.arrays when it came with this call.
function entryArrays(data) {
  if (data.arrays) {
    const t = data.arrays, cols = {};
    for (const f of t.schema.fields) {
      const a = t.getChild(f.name).toArray();  // one chunk: a zero-copy Float64Array
      cols[f.name] = a instanceof Float64Array ? a : Float64Array.from(a);
    }
    NR.entries.delete(data.entry);
    NR.entries.set(data.entry, { cols, arrivedAt: performance.now(), shared: {} });
    while (NR.entries.size > 2) NR.entries.delete(NR.entries.keys().next().value);
  }
  return NR.entries.get(data.entry) || null;
}

// Ask Python for what is missing (at most a few times per entry: a browser that cannot keep it must not loop).
function askFor(setStateValue, data, arrays, plotly) {
  const key = `${data.entry}|${!arrays}|${!plotly}`;
  NR.asked = NR.asked || {};
  if ((NR.asked[key] = (NR.asked[key] || 0) + 1) > 3) return;
  setStateValue('need', { entry: data.entry, arrays: !arrays, plotly: !plotly, nonce: Date.now() + Math.random() });
}

// Plotly puts its CSS (modebar, hover labels) in document.head; a shadow root needs its own copy.
function adoptPlotlyCss(root) {
  const parts = [];
  for (const el of document.querySelectorAll('style[id^="plotly.js-style"]')) {
    try { for (const r of el.sheet.cssRules) parts.push(r.cssText); } catch (e) { /* not readable: skip */ }
  }
  let st = root.querySelector('style[data-plotly-copy]');
  if (st && Number(st.dataset.rules) === parts.length) return;
  if (!st) { st = document.createElement('style'); st.dataset.plotlyCopy = '1'; root.appendChild(st); }
  st.dataset.rules = String(parts.length);
  st.textContent = parts.join('\n');
}

// Chart styling: readable by default, larger and darker in presentation mode (ticks >= 16 px).
function chartStyle(present, el) {
  if (NR.family === undefined && el) NR.family = getComputedStyle(el).getPropertyValue('--st-font').trim() || null;
  const family = NR.family || undefined;
  const st = present
    ? { font: { size: 17, color: '#111' }, tick: { size: 16, color: '#111' }, title: 21, axisTitle: 18 }
    : { font: { size: 14, color: '#31333f' }, tick: { size: 13, color: '#333' }, title: 16, axisTitle: 14 };
  if (family) st.font.family = family;
  return st;
}

// ticklabeloverflow 'allow': the labels live in the margins automargin makes, so Plotly's default check of every
// label's box against the div (a forced layout of the page per label, ~20 % of a histogram redraw) finds nothing.
function styleAxis(axis, st) {
  return Object.assign(axis, { tickfont: { ...st.tick }, automargin: true, ticklabeloverflow: 'allow',
    title: axis.title ? { ...axis.title, font: { size: st.axisTitle, color: st.font.color } } : undefined });
}

function plotConfig(name, present) {
  return { displaylogo: false, responsive: false,
    toImageButtonOptions: present ? { format: 'svg', filename: name } : { format: 'png', filename: name, scale: 2 } };
}

// Follow each plot's own box (Plotly's responsive mode follows window resizes only).
function resizeObserver() {
  return new ResizeObserver((entries) => {
    for (const e of entries) if (window.Plotly && e.target._fullLayout) window.Plotly.Plots.resize(e.target);
  });
}

function fmtNumber(x) {
  if (x === null || x === undefined || Number.isNaN(x)) return '–';
  const a = Math.abs(x);
  return a !== 0 && (a >= 1e5 || a < 1e-3) ? x.toExponential(3) : Number(x.toPrecision(4)).toString();
}

const int = (x) => Math.round(x).toLocaleString('en');
