// The statistics pass's reductions as one read each of a float32 CPU tensor (see native.py, which builds this
// file once per machine and calls it through ctypes; kernels.py's eager kernels are the reference and the
// fallback). No torch headers: it builds in about a second with the system compiler.
//
// Accumulation: float32 partial sums over blocks of at most BLOCK_ROWS rows, added into float64, so the
// rounding is that of a short float32 sum (the eager kernels' is a pairwise float32 sum over all rows).
// Counts are sums of exact 0/1 values. Threads: OpenMP, the same runtime torch's own kernels use (the
// library resolves to the libgomp.so.1 torch has already loaded), over disjoint column ranges, so no
// result depends on the thread count.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <omp.h>

namespace {

constexpr int64_t BLOCK_ROWS = 64;  // rows per float32 partial sum
constexpr int64_t CHUNK = 256;      // columns per inner task: its accumulators stay in L1

// columns [lo, hi) of thread t of T: whole cache lines (16 floats), balanced
inline void split(int64_t n, int t, int T, int64_t& lo, int64_t& hi) {
  const int64_t lines = (n + 15) / 16;
  lo = std::min(n, lines * t / T * 16);
  hi = std::min(n, lines * (t + 1) / T * 16);
}

}  // namespace

extern "C" {

// a: [W, S, n] float32, contiguous. tot: [4, n] float64, written: Σa, Σ|a|, Σa², #{a > 0}.
// wmax, wpos: [W, n] float32 / int64, each window's maximum and the first position holding it (a NaN wins,
// as torch's max propagates it), or null for none.
void nr_act_stats(const float* a, int64_t W, int64_t S, int64_t n, double* tot, float* wmax, int64_t* wpos,
                  int threads) {
#pragma omp parallel num_threads(threads)
  {
    int64_t lo, hi;
    split(n, omp_get_thread_num(), omp_get_num_threads(), lo, hi);
    float f1[CHUNK], f2[CHUNK], f3[CHUNK], fc[CHUNK], m[CHUNK];
    int32_t p[CHUNK];
    double d1[CHUNK], d2[CHUNK], d3[CHUNK], dc[CHUNK];
    for (int64_t j0 = lo; j0 < hi; j0 += CHUNK) {
      const int64_t len = std::min(CHUNK, hi - j0);
      for (int64_t j = 0; j < len; ++j) d1[j] = d2[j] = d3[j] = dc[j] = 0.0;
      for (int64_t w = 0; w < W; ++w) {
        for (int64_t j = 0; j < len; ++j) {
          m[j] = -INFINITY;
          p[j] = 0;
        }
        const float* base = a + w * S * n + j0;
        for (int64_t s0 = 0; s0 < S; s0 += BLOCK_ROWS) {
          const int64_t s1 = std::min(S, s0 + BLOCK_ROWS);
          for (int64_t j = 0; j < len; ++j) f1[j] = f2[j] = f3[j] = fc[j] = 0.f;
          for (int64_t s = s0; s < s1; ++s) {
            const float* row = base + s * n;
            const int32_t si = (int32_t)s;
#pragma omp simd
            for (int64_t j = 0; j < len; ++j) {
              const float x = row[j];
              f1[j] += x;
              f2[j] += std::fabs(x);
              f3[j] += x * x;
              fc[j] += x > 0.f ? 1.f : 0.f;
              const bool gt = x > m[j] || (x != x && m[j] == m[j]);
              m[j] = gt ? x : m[j];
              p[j] = gt ? si : p[j];
            }
          }
          for (int64_t j = 0; j < len; ++j) {
            d1[j] += f1[j];
            d2[j] += f2[j];
            d3[j] += f3[j];
            dc[j] += fc[j];
          }
        }
        if (wmax) {
          for (int64_t j = 0; j < len; ++j) {
            wmax[w * n + j0 + j] = m[j];
            wpos[w * n + j0 + j] = p[j];
          }
        }
      }
      for (int64_t j = 0; j < len; ++j) {
        tot[j0 + j] = d1[j];
        tot[n + j0 + j] = d2[j];
        tot[2 * n + j0 + j] = d3[j];
        tot[3 * n + j0 + j] = dc[j];
      }
    }
  }
}

// x: [W, S, n] float32, contiguous. s1, s2: [W, n] float64, written: per window Σx (skipped when s1 is
// null) and Σx².
void nr_window_sums(const float* x, int64_t W, int64_t S, int64_t n, double* s1, double* s2, int threads) {
#pragma omp parallel num_threads(threads)
  {
    int64_t lo, hi;
    split(n, omp_get_thread_num(), omp_get_num_threads(), lo, hi);
    float f1[CHUNK], f2[CHUNK];
    double d1[CHUNK], d2[CHUNK];
    for (int64_t j0 = lo; j0 < hi; j0 += CHUNK) {
      const int64_t len = std::min(CHUNK, hi - j0);
      for (int64_t w = 0; w < W; ++w) {
        for (int64_t j = 0; j < len; ++j) d1[j] = d2[j] = 0.0;
        const float* base = x + w * S * n + j0;
        for (int64_t r0 = 0; r0 < S; r0 += BLOCK_ROWS) {
          const int64_t r1 = std::min(S, r0 + BLOCK_ROWS);
          for (int64_t j = 0; j < len; ++j) f1[j] = f2[j] = 0.f;
          if (s1) {
            for (int64_t r = r0; r < r1; ++r) {
              const float* row = base + r * n;
#pragma omp simd
              for (int64_t j = 0; j < len; ++j) {
                f1[j] += row[j];
                f2[j] += row[j] * row[j];
              }
            }
          } else {
            for (int64_t r = r0; r < r1; ++r) {
              const float* row = base + r * n;
#pragma omp simd
              for (int64_t j = 0; j < len; ++j) f2[j] += row[j] * row[j];
            }
          }
          for (int64_t j = 0; j < len; ++j) {
            d1[j] += f1[j];
            d2[j] += f2[j];
          }
        }
        for (int64_t j = 0; j < len; ++j) {
          if (s1) s1[w * n + j0 + j] = d1[j];
          s2[w * n + j0 + j] = d2[j];
        }
      }
    }
  }
}

// w: [R, C] float32, contiguous. out: [R] float64, written: Σ_c w[r, c]² (a weight matrix's row norms²).
void nr_row_sq(const float* w, int64_t R, int64_t C, double* out, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t r = 0; r < R; ++r) {
    const float* row = w + r * C;
    double d = 0.0;
    for (int64_t c0 = 0; c0 < C; c0 += 1024) {
      const int64_t c1 = std::min(C, c0 + 1024);
      float f = 0.f;
#pragma omp simd reduction(+ : f)
      for (int64_t c = c0; c < c1; ++c) f += row[c] * row[c];
      d += f;
    }
    out[r] = d;
  }
}

// w: [R, C] float32, contiguous (a weight matrix, usually not in any cache). sabs, ssq: [C] float64, written:
// Σ_r |w[r, c]| and Σ_r w[r, c]². Threads take whole blocks of 32 rows (small blocks: an even share of a
// cold matrix's memory traffic) and read full rows, one sequential stream each; their float64 partials
// are added in thread order.
void nr_col_abs_sq(const float* w, int64_t R, int64_t C, double* sabs, double* ssq, int threads) {
  constexpr int64_t BLOCK_ROWS = 32;
  for (int64_t c = 0; c < C; ++c) sabs[c] = ssq[c] = 0.0;
  const int64_t blocks = (R + BLOCK_ROWS - 1) / BLOCK_ROWS;
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), T = omp_get_num_threads();
    const int64_t b0 = blocks * t / T, b1 = blocks * (t + 1) / T;
    double* da = new double[2 * C]();
    double* dq = da + C;
    float* fa = new float[2 * C];
    float* fq = fa + C;
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t c = 0; c < C; ++c) fa[c] = fq[c] = 0.f;
      const int64_t r1 = std::min(R, (b + 1) * BLOCK_ROWS);
      for (int64_t r = b * BLOCK_ROWS; r < r1; ++r) {
        const float* row = w + r * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          fa[c] += std::fabs(row[c]);
          fq[c] += row[c] * row[c];
        }
      }
      for (int64_t c = 0; c < C; ++c) {
        da[c] += fa[c];
        dq[c] += fq[c];
      }
    }
#pragma omp for ordered schedule(static, 1)
    for (int i = 0; i < T; ++i) {
#pragma omp ordered
      for (int64_t c = 0; c < C; ++c) {
        sabs[c] += da[c];
        ssq[c] += dq[c];
      }
    }
    delete[] da;
    delete[] fa;
  }
}

// FLAP's fluctuation terms of one batch (hooks.DownMoments.add, which is the reference): s1, s2 [W, n]
// float64 per-window Σx, Σx²; windows first+1 .. first+W (global, 1-based), T tokens each. Updates
// c (running Σx), a, b [n] and d [1] in place.
void nr_down_moments(const double* s1, const double* s2, int64_t W, int64_t n, int64_t first, int64_t T,
                     double* c, double* a, double* b, double* d, int threads) {
  double dd = 0.0;
  for (int64_t i = 0; i < W; ++i) {
    const double k = (double)(first + i + 1), w = (k - 1) / k, u = 1.0 / (k * T);
    dd += w * T * u * u;
  }
  d[0] += dd;
#pragma omp parallel for schedule(static) num_threads(threads) if (W * n > 1 << 16)
  for (int64_t j = 0; j < n; ++j) {
    double cj = c[j], aj = 0.0, bj = 0.0;
    for (int64_t i = 0; i < W; ++i) {
      const double k = (double)(first + i + 1), w = (k - 1) / k, u = 1.0 / (k * T);
      const double x1 = s1[i * n + j], x2 = s2[i * n + j];
      cj += x1;
      aj += w * (x2 - 2 * u * cj * x1 + T * u * u * cj * cj);
      bj += w * (2 * T * u * u * cj - 2 * u * x1);
    }
    c[j] = cj;
    a[j] += aj;
    b[j] += bj;
  }
}

int nr_abi_version(void) { return 2; }

}  // extern "C"
