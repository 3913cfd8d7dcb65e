"""The outcome map beside the Exponents sliders: every measured perplexity of NeuronRank-OLD at some (α, β, γ) —
prune runs, sweep cells, search trials — on one statistics entry, at one sparsity, sparsity type and evaluation
protocol, the baselines measured there, and an estimate of log ppl anywhere in exponent space.

    protocols(runs, studies, entry)                       -> the evaluation protocols measured on the entry
    gather(runs, studies, entry, sparsity, type, protocol) -> Outcomes (points, baselines, dense, skipped)
    fit(points)                                            -> Posterior or None (fewer than MIN_POINTS)
    Posterior.predict(alpha, beta, gamma)                  -> (mean log ppl, std)   sklearn's own predict
    Posterior.browser()                                    -> what the browser evaluates on every slider input

The estimate is a Gaussian process (scikit-learn's GaussianProcessRegressor: a constant × Matérn-5/2 kernel with
one length scale per exponent, plus white noise; targets normalised) on log ppl, inputs scaled by the sliders'
range. It is fitted only when the set of points changes (the page caches `fit` by its points) and sent to the
browser once: the training inputs, alpha_ = K⁻¹y, the Cholesky factor L of K, the kernel's hyperparameters and
the target normalisation — enough for the browser to evaluate the same mean and variance as `predict`
(components/outcome_map.js, checked against `predict` by a browser test).

A point is used only when it measures what the map shows: status done, a finite perplexity, the method's own
setup (one-pass calibration, its own comparison group, MLP only, uniform layer sparsity, every layer pruned), and
statistics of this entry. A record that cannot be read (a damaged params or result) is counted in `skipped`,
never raised. numpy/pandas/scikit-learn only.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from neuronrank.config.methods import METHODS
from neuronrank.views.history import series_parts

MIN_POINTS = 5  # below this many measured points the estimate is hidden: a GP on 4 points says nothing
MAX_POINTS = 400  # the newest this many points are fitted (K is N × N in the browser: 400² doubles = 1.3 MB)
SCALE = 3.0  # the sliders' range [0, 3]: inputs are divided by it, so length scales read as slider fractions
EXPONENT_METHOD = next(m for m, info in METHODS.items() if info.uses_exponents)
CALIB_KEYS = ("model", "calib", "nsamples", "seqlen", "seed", "site", "skip_first")
CALIB_DEFAULTS = {"skip_first": 0}  # fields added later: older records lack them at their default
POINT_COLUMNS = ["alpha", "beta", "gamma", "ppl", "source", "ref", "run", "estimate"]


@dataclass(frozen=True)
class Protocol:
    """An evaluation protocol: text source, tokens per window, windows evaluated."""

    source: str
    seqlen: int
    windows: int

    def label(self) -> str:
        return f"{self.source}, seqlen {self.seqlen}, {self.windows} windows"


@dataclass
class Outcomes:
    points: pd.DataFrame  # POINT_COLUMNS: one row per measurement (repeats kept: the GP's noise takes them)
    baselines: dict[str, dict]  # method -> {"ppl": mean, "runs": n}
    dense: float | None
    skipped: int = 0  # records that could not be read
    diverged: int = 0  # measurements with a non-finite perplexity (not fitted; said beside the map)
    pending: list[dict] = field(default_factory=list)  # measure runs still queued or running at this point


# ----------------------------------------------------------------------------------------------
# reading the records


def _num(x) -> float:
    v = float(x)  # TypeError/ValueError for junk: the caller counts the record as skipped
    return v


def _protocol_of(res: dict) -> Protocol:
    p = res["protocol"]
    return Protocol(str(p["source"]), int(p["seqlen"]), int(p["windows"]))


def _own_setup(method: str, params: dict) -> bool:
    """The method as its paper runs it (no calibration order, group, targets, OWL or compensation of another
    setup) and every layer pruned: the exponents (or the method) are then the only difference between points."""
    if params.get("pruning_last"):
        return False
    return not series_parts(method, params.get("sparsity_type"), calibration=params.get("calibration"),
                            per=params.get("group"), targets=params.get("targets"),
                            layer_sparsity=params.get("layer_sparsity"), owl_lambda=params.get("owl_lambda"),
                            compensate=params.get("compensate"))


def _same_calibration(params: dict, calib: dict) -> bool:
    return all(params.get(k, CALIB_DEFAULTS.get(k)) == calib.get(k, CALIB_DEFAULTS.get(k)) for k in CALIB_KEYS)


def _on_entry(params: dict, res: dict, entry_key: str, calib: dict) -> bool:
    """Statistics of this entry: the run names the entry it used, else (an older record) its calibration
    fields are the entry's."""
    key = res.get("stats_key")
    return key == entry_key if key else _same_calibration(params, calib)


def _same_model_for(method: str, params: dict, res: dict, entry_key: str, calib: dict) -> bool:
    """A baseline is comparable when it ran on the entry's model — and, for methods that calibrate, on its
    calibration text and windows (the seed also draws random's noise)."""
    info = METHODS.get(method)
    if info is None:
        return False
    if info.needs_stats or method == "random":
        return _on_entry(params, res, entry_key, calib) if res.get("stats_key") else _same_calibration(params, calib)
    return params.get("model") == calib.get("model")


def _same_sparsity(params: dict, sparsity: float, sparsity_type: str) -> bool:
    return params.get("sparsity_type") == sparsity_type and math.isclose(_num(params["sparsity_ratio"]),
                                                                          float(sparsity), abs_tol=1e-9)


def protocols(runs: list[dict], studies: list[dict], entry_key: str, calib: dict) -> dict[Protocol, int]:
    """The evaluation protocols of the entry's finished prune runs and search studies -> measurements each."""
    out: dict[Protocol, int] = {}
    for r in runs:
        try:
            p, res = r["params"], r["result"] or {}
            if r["kind"] != "prune" or r["status"] != "done" or not isinstance(p, dict):
                continue
            if p.get("model") != calib.get("model"):
                continue
            proto = _protocol_of(res)
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        out[proto] = out.get(proto, 0) + 1
    for s in studies:
        try:
            if not _study_on_entry(s, calib):
                continue
            proto = _study_protocol(s)
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        out[proto] = out.get(proto, 0) + len(s.get("trials") or [])
    return out


def _study_on_entry(s: dict, calib: dict) -> bool:
    return _same_calibration(s["protocol"], calib)


def _study_protocol(s: dict) -> Protocol:
    ev = s["evaluation"]
    return Protocol(str(ev["source"]), int(ev["seqlen"]), int(ev["windows"]))


def _study_own_setup(proto: dict) -> bool:
    """A study's protocol names its settings as a prune run's parameters do (fields at their default may be
    left out)."""
    return _own_setup(EXPONENT_METHOD, {"calibration": "one-pass", "targets": "mlp", "layer_sparsity": "uniform",
                                        **proto})


def gather(runs: list[dict], studies: list[dict], entry_key: str, calib: dict, sparsity: float,
           sparsity_type: str, protocol: Protocol) -> Outcomes:
    """Every measurement of NeuronRank-OLD on this entry at this sparsity, type and protocol (prune runs and
    sweep cells from the run store, complete trials of search studies), and the baselines measured there.

    `runs`: RunStore rows; `studies`: search.outcomes.study_outcomes rows ({"study", "protocol", "evaluation",
    "baselines", "trials": [{"number", "alpha", "beta", "gamma", "ppl"}]}); `calib`: the entry's calibration
    fields (model, calib, nsamples, seqlen, seed, site, skip_first)."""
    rows, base, dense, pending = [], {}, [], []
    skipped = diverged = 0
    for r in runs:
        try:
            if r.get("kind") != "prune":
                continue
            p = r["params"]
            method = p["prune_method"]
            if not _same_sparsity(p, sparsity, sparsity_type) or not _own_setup(method, p):
                continue
            meta = r.get("meta") or {}
            if r["status"] in ("queued", "running"):
                if method == EXPONENT_METHOD and meta.get("estimate") and _same_calibration(p, calib):
                    pending.append({"run": int(r["id"]), "status": r["status"], **_exps(p), "estimate": meta["estimate"]})
                continue
            if r["status"] != "done":
                continue
            res = r["result"]
            if _protocol_of(res) != protocol:
                continue
            ppl = _num(res["pruned_ppl"])
            if method == EXPONENT_METHOD:
                if not _on_entry(p, res, entry_key, calib):
                    continue
                exps = _exps(p)
                if not math.isfinite(ppl) or ppl <= 0:
                    diverged += 1
                    continue
                sweep = str(r.get("grp") or "").startswith("sweep-")
                rows.append({**exps, "ppl": ppl, "source": "sweep" if sweep else "run", "ref": f"run {r['id']}",
                             "run": int(r["id"]), "estimate": meta.get("estimate")})
            elif _same_model_for(method, p, res, entry_key, calib):
                if math.isfinite(ppl) and ppl > 0:
                    base.setdefault(method, []).append(ppl)
            else:
                continue
            d = res.get("dense_ppl")
            if d is not None and math.isfinite(_num(d)):
                dense.append(_num(d))
        except (KeyError, TypeError, ValueError, AttributeError):
            skipped += 1
    for s in studies:
        try:
            proto = s["protocol"]
            if not (_study_on_entry(s, calib) and proto.get("prune_method") == EXPONENT_METHOD
                    and proto.get("sparsity_type") == sparsity_type
                    and math.isclose(_num(proto["sparsity_ratio"]), float(sparsity), abs_tol=1e-9)
                    and _study_own_setup(proto) and _study_protocol(s) == protocol):
                continue
            for t in s.get("trials") or []:
                try:
                    ppl = _num(t["ppl"])
                    exps = {k: _num(t[k]) for k in ("alpha", "beta", "gamma")}
                except (KeyError, TypeError, ValueError):
                    skipped += 1
                    continue
                if not all(math.isfinite(v) for v in exps.values()):
                    skipped += 1
                elif not math.isfinite(ppl) or ppl <= 0:
                    diverged += 1
                else:
                    rows.append({**exps, "ppl": ppl, "source": "trial", "ref": f"study {s['study']} trial {t['number']}",
                                 "run": None, "estimate": None})
            for name, b in (s.get("baselines") or {}).items():
                v = (b or {}).get("ppl") if isinstance(b, dict) else None
                if v is None or not math.isfinite(_num(v)):
                    continue
                if name == "dense":
                    dense.append(_num(v))
                elif name in METHODS and not METHODS[name].uses_exponents:
                    base.setdefault(name, []).append(_num(v))
        except (KeyError, TypeError, ValueError, AttributeError):
            skipped += 1
    points = pd.DataFrame(rows, columns=POINT_COLUMNS)
    baselines = {m: {"ppl": float(np.mean(v)), "runs": len(v)} for m, v in sorted(base.items())}
    return Outcomes(points, baselines, float(np.median(dense)) if dense else None, skipped, diverged, pending)


def _exps(p: dict) -> dict[str, float]:
    out = {k: _num(p[k]) for k in ("alpha", "beta", "gamma")}
    if not all(math.isfinite(v) for v in out.values()):
        raise ValueError("exponents not finite")
    return out


# ----------------------------------------------------------------------------------------------
# the estimate


def points_key(points: pd.DataFrame) -> tuple:
    """What the fit depends on (the page caches `fit` by it): the exponents and perplexities, in order."""
    return tuple(map(tuple, points[["alpha", "beta", "gamma", "ppl"]].to_numpy(float).tolist()))


@dataclass
class Posterior:
    gp: object  # the fitted sklearn GaussianProcessRegressor
    n: int
    seconds: float
    sig: str = ""  # names the fitted points (what the browser keeps the posterior by)

    def predict(self, alpha, beta, gamma) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) of log ppl at these exponents (scalars or arrays), from sklearn's predict."""
        X = np.column_stack([np.atleast_1d(np.asarray(v, float)) for v in (alpha, beta, gamma)]) / SCALE
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mean, std = self.gp.predict(X, return_std=True)
        return np.asarray(mean, float), np.asarray(std, float)

    def estimate(self, alpha: float, beta: float, gamma: float, z: float = 1.0) -> dict:
        """The estimate as the page says it: ppl = exp(mean), band exp(mean ± z·std) (z = 1: 68 %)."""
        m, s = (float(v[0]) for v in self.predict(alpha, beta, gamma))
        return {"alpha": float(alpha), "beta": float(beta), "gamma": float(gamma), "log_mean": m, "log_std": s,
                "ppl": math.exp(m), "low": math.exp(m - z * s), "high": math.exp(m + z * s), "points": self.n}

    def browser(self) -> dict:
        """The fitted posterior for the browser (JSON: floats survive exactly, Python writes them by repr)."""
        gp = self.gp
        k = gp.kernel_  # (constant * matern) + white
        prod, white = k.k1, k.k2
        const, matern = prod.k1, prod.k2
        return {"n": self.n, "scale": SCALE, "nu": float(matern.nu),
                "X": np.asarray(gp.X_train_, float).ravel().tolist(),
                "ls": np.atleast_1d(np.asarray(matern.length_scale, float)).tolist(),
                "c": float(const.constant_value), "noise": float(white.noise_level),
                "alpha": np.asarray(gp.alpha_, float).ravel().tolist(),
                "L": np.asarray(gp.L_, float).ravel().tolist(),
                "y_mean": float(np.ravel(gp._y_train_mean)[0]), "y_std": float(np.ravel(gp._y_train_std)[0]),
                "kernel": str(k), "sig": self.sig}


def make_gp():
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    kernel = (ConstantKernel(1.0, (1e-3, 1e3)) * Matern(length_scale=[0.3, 0.3, 0.3], length_scale_bounds=(1e-2, 1e2),
                                                        nu=2.5)
              + WhiteKernel(1e-2, (1e-6, 1.0)))
    return GaussianProcessRegressor(kernel=kernel, normalize_y=True, n_restarts_optimizer=2, random_state=0)


def fit(points: pd.DataFrame) -> Posterior | None:
    """A GP on log ppl of the points (the newest MAX_POINTS), or None with fewer than MIN_POINTS."""
    import time

    pts = points.tail(MAX_POINTS)
    if len(pts) < MIN_POINTS:
        return None
    X = pts[["alpha", "beta", "gamma"]].to_numpy(float) / SCALE
    y = np.log(pts["ppl"].to_numpy(float))
    from threadpoolctl import threadpool_limits

    gp = make_gp()
    t0 = time.perf_counter()
    # a length scale at its bound is not an error: the fit is still the best found. One BLAS thread: matrices of a
    # few hundred rows gain nothing from threads, and on a shared machine threads only contend
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")
        gp.fit(X, y)
    sig = hashlib.sha1(X.tobytes() + y.tobytes() + repr(gp.kernel_).encode()).hexdigest()[:16]
    return Posterior(gp, len(pts), time.perf_counter() - t0, sig)


def browser_points(out: Outcomes) -> dict:
    """The map's measured points and baselines for the browser (plain lists)."""
    pts = out.points
    return {"alpha": pts["alpha"].astype(float).tolist(), "beta": pts["beta"].astype(float).tolist(),
            "gamma": pts["gamma"].astype(float).tolist(), "ppl": pts["ppl"].astype(float).tolist(),
            "source": pts["source"].astype(str).tolist(), "ref": pts["ref"].astype(str).tolist(),
            "measured": [{"run": int(r.run), "alpha": float(r.alpha), "beta": float(r.beta), "gamma": float(r.gamma),
                          "ppl": float(r.ppl), "estimate": r.estimate} for r in pts.itertuples()
                         if isinstance(r.estimate, dict) and r.run is not None],
            "pending": out.pending,
            "baselines": {m: b["ppl"] for m, b in out.baselines.items()}, "dense": out.dense,
            "skipped": out.skipped, "diverged": out.diverged}


def estimate_text(est: dict) -> str:
    """"estimated 45.3 (68 %: 38.1–53.9), 12 points" — the estimate is never said without its band."""
    return (f"estimated ppl {est['ppl']:.4g} (68 %: {est['low']:.4g}–{est['high']:.4g}), "
            f"from {est['points']} measured points")


def measured_text(estimate: dict, ppl: float) -> str:
    return f"estimated {estimate['ppl']:.4g} ± {_pm(estimate)}, measured {ppl:.4g}"


def _pm(est: dict) -> str:
    """The band's half-width in ppl (geometric band: the larger side, rounded)."""
    return f"{max(est['high'] - est['ppl'], est['ppl'] - est['low']):.2g}"
