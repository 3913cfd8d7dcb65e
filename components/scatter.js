// The Roles page's TF-vs-IDF scatter: every neuron (WebGL), from the entry's arrays the tab already holds.
// (components/scatter.py builds one ES module: common.js + this file.)
//
// data from Python: {entry, n_layers, width, log, picked: [layer, neuron] | null, present, arrays?, plotly_js?}
// state back to Python: pick = {layer, neuron, nonce} when a point is clicked (one rerun: the page shows that
// neuron), need (see common.js).

function layerNeuron(ent, width) {  // per row: layer and neuron (the table is layer-major), made once per entry
  if (!ent.shared.rows) {
    const n = ent.cols.tf.length, layer = new Int32Array(n), neuron = new Int32Array(n);
    for (let i = 0; i < n; i++) { layer[i] = (i / width) | 0; neuron[i] = i % width; }
    ent.shared.rows = { layer, neuron };
  }
  return ent.shared.rows;
}

class Scatter {
  constructor(parent) {
    this.root = document.createElement('div');
    this.root.className = 'nrs';
    this.root.innerHTML = '<p class="hint" data-hint></p><div class="plot" data-plot></div>';
    parent.appendChild(this.root);
    this.plot = this.root.querySelector('[data-plot]');
    this.resizer = resizeObserver();
    this.opened = false;
  }

  open() {
    if (this.opened) return;
    this.opened = true;
    this.resizer.observe(this.plot);
  }

  close() { this.opened = false; this.resizer.disconnect(); }

  draw(data, ent) {
    const P = window.Plotly, c = ent.cols, n = c.tf.length, st = chartStyle(data.present, this.root);
    const rows = layerNeuron(ent, data.width);
    let zeroTf = 0;
    if (data.log) for (let i = 0; i < n; i++) if (!(c.tf[i] > 0)) zeroTf++;
    const traces = [{
      type: 'scattergl', mode: 'markers', x: c.tf, y: c.idf, customdata: rows.layer, text: rows.neuron,
      marker: { size: n > 100000 ? 3 : 5, color: c.w, colorscale: 'Viridis', opacity: 0.75,
                colorbar: { title: { text: '|W|', font: { size: st.axisTitle } }, tickfont: st.tick, thickness: 14 } },
      hovertemplate: 'layer %{customdata}, neuron %{text}<br>TF %{x:.4g}<br>IDF %{y:.4g}<br>|W| %{marker.color:.4g}' +
                     '<extra>click to open</extra>',
      name: 'neurons', showlegend: false,
    }];
    // the chosen neuron: an arrow annotation (a layout change only: the WebGL traces are not drawn again)
    const annotations = [];
    if (data.picked) {
      const [l, k] = data.picked, i = l * data.width + k;
      if (i >= 0 && i < n && (!data.log || c.tf[i] > 0)) {
        annotations.push({ x: data.log ? Math.log10(c.tf[i]) : c.tf[i], y: c.idf[i], xref: 'x', yref: 'y',
          text: `<b>${l}:${k}</b>`, showarrow: true, arrowhead: 2, arrowwidth: 2, arrowcolor: '#d62728', ax: 34, ay: -34,
          font: { color: '#d62728', size: st.tick.size + 1 }, bgcolor: 'rgba(255,255,255,0.9)' });
      }
    }
    const notes = [`all ${int(n)} neurons`];
    if (zeroTf) notes.push(`${int(zeroTf)} with TF = 0 not shown on the log axis`);
    const layout = {
      title: { text: `TF vs IDF, coloured by |W| <span style="font-size:0.8em">(${notes.join('; ')})</span>`,
               font: { size: st.title, color: st.font.color }, x: 0, xanchor: 'left' },
      font: st.font, height: data.present ? 600 : 540, margin: { l: 10, r: 10, t: 56, b: 10 }, dragmode: 'zoom',
      xaxis: styleAxis({ title: { text: 'TF (mean |activation|)' }, type: data.log ? 'log' : 'linear',
                         ...(data.log ? { dtick: 1, exponentformat: 'power' } : {}) }, st),
      yaxis: styleAxis({ title: { text: 'IDF' } }, st),
      hovermode: 'closest', hoverlabel: { font: { size: st.tick.size } }, annotations,
    };
    const t0 = performance.now();
    P.react(this.plot, traces, layout, plotConfig('tf_vs_idf', data.present));
    NR.scatter = { drawnMs: performance.now() - t0, points: n, picked: data.picked };
    this.root.querySelector('[data-hint]').textContent =
      'Hover a point for its neuron; click it to open that neuron below (drag to zoom, double-click to reset).';
    if (!this.plot.__nrsClick) {
      this.plot.__nrsClick = true;
      this.plot.on('plotly_click', (ev) => {
        const p = ev && ev.points && ev.points.find((q) => q.curveNumber === 0);
        if (!p || !this.setState) return;
        const i = p.pointNumber;
        this.setState('pick', { entry: this.entry, layer: (i / this.width) | 0, neuron: i % this.width, nonce: Date.now() });
      });
    }
  }
}

export default function (component) {
  const { data, parentElement, setStateValue } = component;
  if (!data || !data.entry) return;
  const inst = parentElement.__nrs || (parentElement.__nrs = new Scatter(parentElement));
  inst.setState = setStateValue;
  inst.entry = data.entry; inst.width = data.width;
  inst.open();
  const ent = entryArrays(data), plotly = ensurePlotly(data);
  if (!ent || !plotly) { askFor(setStateValue, data, ent, plotly); return; }
  const sig = JSON.stringify([data.entry, data.log, data.picked, data.present, data.width]);
  if (sig !== inst.sig) {
    inst.sig = sig;
    adoptPlotlyCss(parentElement);
    inst.draw(data, ent);
    requestAnimationFrame(() => adoptPlotlyCss(parentElement));
  }
  return () => inst.close();
}
