// The Exponents explorer's numbers: the library's rules (neuronrank/analysis/scoring.py,
// neuronrank/views/explorer.py) re-implemented on Float64Arrays. No DOM here: the equality test loads this file
// alone into a blank page and compares every number with the library's on the same arrays.
//
// Rules reproduced exactly (same float64 operations in the same order):
//   score = (|W|^α · TF^β) · IDF^γ; exponent 0 -> factor 1 (skipped), 1 -> the base itself,
//   2 -> x·x, 0.5 -> sqrt(x) (numpy gives exactly these); other exponents exp(e·ln x) — within a few
//   tens of ulps of np.power (bit-identity with numpy is impossible: V8's Math.pow is not correctly
//   rounded, and numpy itself uses SVML on AVX-512 CPUs).
//   histogram: np.histogram(s, 100) over [min, max] (expanded by ±0.5 when equal), edges as
//   np.linspace builds them, the bin index computed and corrected as numpy does; log: log10 of s > 0;
//   non-finite scores dropped, zeros counted apart.
//   k = round(sparsity · n) with Python's round (half to even); the cut is the k-th smallest value
//   (np.partition: NaN last); pruned sets: s < t plus the earliest ties (scoring._lowest_rows).
//   ties at the cut: views.ties_at_cut (tied neurons, and the pruned ones among them the row order chose).

const HBITS = 65536;
// log2(1 + (i + 0.5) / 4096): a log2 estimate from the top 12 mantissa bits (error < 2e-4)
const LOG2_TABLE = Float64Array.from({ length: 4096 }, (_, i) => Math.log2(1 + (i + 0.5) / 4096));

export function roundHalfEven(x) {
  const r = Math.round(x);
  return (Math.abs(x - Math.trunc(x)) === 0.5 && r % 2 !== 0) ? r - 1 : r;
}

export class Explorer {
  constructor({ w, tf, idf, wanda, nLayers, width }) {
    this.n = w.length;
    this.nLayers = nLayers;
    this.width = width;
    this.base = { w, tf, idf };
    this.wanda = wanda;
    this.ln = {};                                  // lazily: ln of each base, for exp(e·ln x)
    this.factor = { w: null, tf: null, idf: null }; // {e, arr|null(=ones)}
    this.score = new Float64Array(this.n);
    this.idx = new Int32Array(this.n);              // radix-select candidates
    this.H = new Int32Array(HBITS);
    this.bits = new Float64Array(1);
    this.bits32 = new Uint32Array(this.bits.buffer);
    this.maskMine = new Uint8Array(this.n);
    this.maskGlobal = new Uint8Array(this.n);
    this.baseMasks = new Map();                     // "name|sparsity|grouping" -> Uint8Array
    this.timing = {};
  }

  // --- scores ------------------------------------------------------------------------------------
  _factor(name, e) {
    const f = this.factor[name];
    if (f && f.e === e) return f.arr;
    const x = this.base[name];
    let arr;
    if (e === 0) arr = null;
    else if (e === 1) arr = x;
    else {
      arr = (f && f.arr && f.arr !== x) ? f.arr : new Float64Array(this.n);
      const n = this.n;
      if (e === 2) for (let i = 0; i < n; i++) { const v = x[i]; arr[i] = v * v; }
      else if (e === 0.5) for (let i = 0; i < n; i++) arr[i] = Math.sqrt(x[i]);
      else {
        let l = this.ln[name];
        if (!l) { l = this.ln[name] = new Float64Array(n); for (let i = 0; i < n; i++) l[i] = Math.log(x[i]); }
        for (let i = 0; i < n; i++) arr[i] = Math.exp(e * l[i]);
      }
    }
    this.factor[name] = { e, arr };
    return arr;
  }

  scores(alpha, beta, gamma) {
    const a = this._factor('w', alpha), b = this._factor('tf', beta), g = this._factor('idf', gamma);
    const s = this.score, n = this.n;
    const fs = [a, b, g].filter(Boolean);           // a skipped factor is exactly 1: x·1 = x
    if (fs.length === 0) s.fill(1);
    else if (fs.length === 1) s.set(fs[0]);
    else if (fs.length === 2) { const [p, q] = fs; for (let i = 0; i < n; i++) s[i] = p[i] * q[i]; }
    else for (let i = 0; i < n; i++) s[i] = a[i] * b[i] * g[i];  // (a·b)·g, numpy's order
    this.sv = { alpha, beta, gamma };
    this.allStats = null;
    return s;
  }

  // --- histogram (views.histogram) ----------------------------------------------------------------
  // log: the bin of x is the bin of y = log10(x) under numpy's rule (e[j] <= y < e[j+1], last bin closed).
  // y >= e[j]  <=>  x >= T[j], T[j] the smallest double whose Math.log10 is >= e[j] (log10 is monotone),
  // so a value is binned by comparisons with T — found from a cheap log2 estimate off its bits —
  // and no log10 is computed per value.
  histogram(lo, hi, log, bins = 100) {
    const s = this.score;
    // one pass gives both axes' ranges; kept for the other axis of the same scores
    const whole = lo === 0 && hi === this.n;
    let st = whole ? this.allStats : null;
    if (!st) {
      let zeros = 0, dropped = 0, m = 0, mn = Infinity, mx = -Infinity, mnp = Infinity;
      for (let i = lo; i < hi; i++) {
        const x = s[i];
        if (x - x !== 0) { dropped++; continue; }     // NaN or ±inf
        if (x === 0) zeros++;
        else if (x < mnp) mnp = x;                    // scores are never negative: x > 0 here
        m++;
        if (x < mn) mn = x;
        if (x > mx) mx = x;
      }
      st = { zeros, dropped, m, mn, mx, mnp };
      if (whole) this.allStats = st;
    }
    const { zeros, dropped } = st;
    const m = log ? st.m - st.zeros : st.m, mn = log ? st.mnp : st.mn, mx = st.mx;
    const edges = new Float64Array(bins + 1), counts = new Float64Array(bins);
    let first = 0, last = 1;
    if (m > 0) {
      first = log ? Math.log10(mn) : mn; last = log ? Math.log10(mx) : mx;
      if (first === last) { first -= 0.5; last += 0.5; }
    }
    const step = (last - first) / bins;               // np.linspace: i*step + start, last = stop
    for (let i = 0; i < bins; i++) edges[i] = i * step + first;
    edges[bins] = last;
    if (m === 0) return { edges, counts, log, zeros, dropped, total: hi - lo };
    const denom = last - first, B = bins - 1;
    if (!log) {
      for (let i = lo; i < hi; i++) {
        const x = s[i];
        if (x - x !== 0) continue;
        let k = ((x - first) / denom * bins) | 0;
        if (k === bins) k = B;
        if (x < edges[k]) k--;
        else if (k !== B && x >= edges[k + 1]) k++;
        counts[k]++;
      }
      return { edges, counts, log, zeros, dropped, total: hi - lo };
    }
    const T = this._thresholds(edges), u = this.u32 || (this.u32 = new Uint32Array(s.buffer, s.byteOffset, s.length * 2));
    const L2 = LOG2_TABLE, inv = bins / denom, LOG10_2 = Math.LOG10E / Math.LOG2E;
    for (let i = lo; i < hi; i++) {
      const x = s[i];
      if (!(x > 0) || x === Infinity) continue;       // zeros, NaN, inf: not on a log axis
      const h = u[2 * i + 1], ex = h >>> 20;
      const y = ex === 0 ? Math.log10(x) : ((ex - 1023) + L2[(h >>> 8) & 4095]) * LOG10_2;
      let k = Math.floor((y - first) * inv);
      if (k < 0) k = 0; else if (k > B) k = B;
      while (k < B && x >= T[k + 1]) k++;
      while (k > 0 && x < T[k]) k--;
      counts[k]++;
    }
    return { edges, counts, log, zeros, dropped, total: hi - lo };
  }

  _thresholds(edges) {
    const T = new Float64Array(edges.length), b = this.bits, w = this.bits32;
    const up = (x) => { b[0] = x; if (w[0] === 0xffffffff) { w[0] = 0; w[1]++; } else w[0]++; return b[0]; };
    const down = (x) => { b[0] = x; if (w[0] === 0) { w[0] = 0xffffffff; w[1]--; } else w[0]--; return b[0]; };
    for (let j = 0; j < edges.length; j++) {
      const e = edges[j];
      let x = Math.pow(10, e);
      if (!(x > 0) || x === Infinity) { T[j] = x; continue; }
      while (x > Number.MIN_VALUE && Math.log10(down(x)) >= e) x = down(x);
      while (Math.log10(x) < e) x = up(x);
      T[j] = x;
    }
    return T;
  }

  // --- k-th smallest by radix select on the float64 bit patterns (scores are ≥ 0; NaN sorts last) ---
  kth(arr, lo, hi, k) {
    const u = new Uint32Array(arr.buffer, arr.byteOffset, arr.length * 2), H = this.H, idx = this.idx;
    const pick = (kk) => { let c = 0; for (let b = 0; b < HBITS; b++) { const h = H[b]; if (c + h >= kk) return [b, kk - c]; c += h; } throw new Error('kth'); };
    H.fill(0);
    for (let i = lo; i < hi; i++) H[u[2 * i + 1] >>> 16]++;
    let [b1, k1] = pick(k);
    let nBelow = k - k1;
    H.fill(0);
    let c = 0;
    for (let i = lo; i < hi; i++) { const h = u[2 * i + 1]; if ((h >>> 16) === b1) { idx[c++] = i; H[h & 0xffff]++; } }
    const [b2, k2] = pick(k1);
    nBelow += k1 - k2;
    const hw = ((b1 << 16) | b2) >>> 0;
    H.fill(0);
    let c2 = 0;
    for (let j = 0; j < c; j++) { const i = idx[j]; if (u[2 * i + 1] === hw) { idx[c2++] = i; H[u[2 * i] >>> 16]++; } }
    const [b3, k3] = pick(k2);
    nBelow += k2 - k3;
    H.fill(0);
    for (let j = 0; j < c2; j++) { const l = u[2 * idx[j]]; if ((l >>> 16) === b3) H[l & 0xffff]++; }
    const [b4, k4] = pick(k3);
    nBelow += k3 - k4;
    this.below = nBelow;                              // values strictly smaller than the result
    this.bits32[1] = hw; this.bits32[0] = ((b3 << 16) | b4) >>> 0;
    return this.bits[0];
  }

  // views.prune_threshold: the k-th smallest (on the log axis with log), null when nothing is pruned
  cut(lo, hi, sparsity, log) {
    const n = hi - lo, k = roundHalfEven(sparsity * n);
    if (k <= 0 || n === 0) return null;
    const t = this.kth(this.score, lo, hi, k);
    if (!(t - t === 0) || (log && t <= 0)) return null;
    return log ? Math.log10(t) : t;
  }

  // scoring.lowest -> mask (1 = pruned); per layer or global; ties: earliest rows first
  // (this.lastTies: views.ties_at_cut of the ranking just masked)
  lowest(arr, sparsity, perLayer, out) {
    const ties = { tied: 0, byOrder: 0, pruned: 0 };
    if (perLayer) { for (let l = 0; l < this.nLayers; l++) this._lowestRange(arr, l * this.width, (l + 1) * this.width, sparsity, out, ties); }
    else this._lowestRange(arr, 0, this.n, sparsity, out, ties);
    this.lastTies = ties;
    return out;
  }

  _lowestRange(arr, lo, hi, sparsity, out, ties) {
    const k = roundHalfEven(sparsity * (hi - lo));
    if (k === 0) { out.fill(0, lo, hi); return; }
    const t = this.kth(arr, lo, hi, k);
    const first = k - this.below;
    let need = first, equal = 0;
    for (let i = lo; i < hi; i++) {
      const x = arr[i];
      if (x < t) out[i] = 1;
      else if (x === t) { equal++; if (need > 0) { out[i] = 1; need--; } else out[i] = 0; }
      else out[i] = 0;
    }
    ties.pruned += k;
    if (equal > first) { ties.tied += equal; ties.byOrder += first; }
  }

  baseMask(name, sparsity, perLayer) {
    const key = `${name}|${sparsity}|${perLayer}`;
    let m = this.baseMasks.get(key);
    if (!m) {
      if (this.baseMasks.size >= 8) this.baseMasks.delete(this.baseMasks.keys().next().value);
      m = this.lowest(name === 'magnitude' ? this.base.w : this.wanda, sparsity, perLayer, new Uint8Array(this.n));
      this.baseMasks.set(key, m);
    }
    return m;
  }

  // views.pruned_fraction + views.ranking_overlap (uses this.score)
  layerTables(sparsity, perLayerGrouping) {
    const L = this.nLayers, W = this.width, s = this.score;
    const g = this.lowest(s, sparsity, false, this.maskGlobal);
    const tiesGlobal = this.lastTies;
    const globalFrac = new Float64Array(L), perLayerFrac = new Float64Array(L);
    for (let l = 0; l < L; l++) { let c = 0; for (let i = l * W, e = i + W; i < e; i++) c += g[i]; globalFrac[l] = c / Math.max(W, 1); }
    const mine = this.lowest(s, sparsity, true, this.maskMine);  // per layer (kept for the overlap when grouped so)
    const tiesPerLayer = this.lastTies;
    perLayerFrac.fill(roundHalfEven(sparsity * W) / Math.max(W, 1));  // k of each layer's W, by construction
    const chosen = perLayerGrouping ? mine : g;
    const overlap = {};
    for (const name of ['magnitude', 'wanda']) {
      const b = this.baseMask(name, sparsity, perLayerGrouping);
      const inter = new Float64Array(L), uni = new Float64Array(L);
      let I = 0, U = 0, P = 0;
      for (let l = 0; l < L; l++) {
        let ii = 0, uu = 0;
        for (let i = l * W, e = i + W; i < e; i++) { const a = chosen[i], c = b[i]; ii += a & c; uu += a | c; P += a; }
        inter[l] = ii; uni[l] = uu; I += ii; U += uu;
      }
      const per = new Float64Array(L);
      for (let l = 0; l < L; l++) per[l] = uni[l] > 0 ? inter[l] / Math.max(uni[l], 1) : 1.0;
      overlap[name] = { jaccard: U ? I / U : 1.0, shared: I, pruned: P, perLayer: per };
    }
    return { globalFrac, perLayerFrac, overlap, ties: { global: tiesGlobal, perLayer: tiesPerLayer } };
  }

  // views.lowest_neurons: the n lowest in stable-argsort order
  lowestNeurons(nn = 50) {
    const s = this.score, n = Math.min(nn, this.n);
    if (n <= 0) return [];
    const kth = this.kth(s, 0, this.n, n);
    const cand = [];
    for (let i = 0; i < this.n; i++) if (s[i] <= kth) cand.push(i);
    cand.sort((a, b) => (s[a] - s[b]) || (a - b));
    return cand.slice(0, n).map((i, r) => ({ rank: r + 1, layer: (i / this.width) | 0, neuron: i % this.width,
      tf: this.base.tf[i], idf: this.base.idf[i], w_norm: this.base.w[i], score: s[i] }));
  }
}
