"""The run history as tables: flat rows for display and CSV, the method comparison, and the exponent
landscape of a sweep. pandas only; the app and tests share these."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from neuronrank.config.methods import METHODS
from neuronrank.config.requests import EXPONENT_LABELS
from neuronrank.views import charts


def runs_frame(runs: list[dict]) -> pd.DataFrame:
    """One row per prune run with its parameters, status and results (NaN where not finished)."""
    rows = []
    for r in runs:
        p, res = r["params"], r["result"] or {}
        proto = res.get("protocol", {})
        rows.append({
            "run": r["id"], "status": r["status"], "method": p.get("prune_method"),
            "type": p.get("sparsity_type"), "ratio": p.get("sparsity_ratio"), "last": p.get("pruning_last"),
            "alpha": p.get("alpha"), "beta": p.get("beta"), "gamma": p.get("gamma"),
            "calibration": p.get("calibration"), "per": p.get("group"), "targets": p.get("targets"),
            "layer_sparsity": p.get("layer_sparsity"), "owl_lambda": p.get("owl_lambda"),
            "compensate": p.get("compensate"),
            "eval_tasks": p.get("eval_tasks"),
            "dense_ppl": _number(res.get("dense_ppl")), "pruned_ppl": _number(res.get("pruned_ppl")),
            "mlp_sparsity": _number(res["sparsity"].get("mlp") if isinstance(res.get("sparsity"), dict) else None),
            "eval": proto.get("source"), "eval_seqlen": proto.get("seqlen"), "eval_windows": proto.get("windows"),
            "model": p.get("model"), "calib": p.get("calib"), "nsamples": p.get("nsamples"),
            "seqlen": p.get("seqlen"), "seed": p.get("seed"), "group": r.get("grp"), "origin": r.get("origin"),
            "seconds": (r["finished"] - r["started"]) if r.get("finished") and r.get("started") else np.nan,
            "created": dt.datetime.fromtimestamp(r["created"]).strftime("%Y-%m-%d %H:%M:%S"),
            "error": r.get("error"),
        })
    return pd.DataFrame(rows)


def _number(x) -> float:
    """A stored result number, NaN where it is missing or not a number (a damaged record: shown as –)."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else np.nan


def series_parts(method: str, sparsity_type: str, alpha=None, beta=None, gamma=None, *, calibration=None,
                 per=None, targets=None, layer_sparsity=None, owl_lambda=None, compensate=None) -> list[str]:
    """What names a compared configuration after its method and type: its exponents where it has any, and
    whatever departs from the method's own setup (another calibration order, another comparison group,
    all linears, OWL's layer sparsity with its λ, another bias compensation)."""
    info = METHODS.get(method)
    calibration, per, targets, layer_sparsity, compensate = (
        v if isinstance(v, str) else None for v in (calibration, per, targets, layer_sparsity, compensate))
    parts = []
    if info and info.uses_exponents and alpha is not None:
        parts.append(f"α={alpha:g} β={beta:g} γ={gamma:g}")
    if calibration and info and info.needs_stats and info.calibration is None \
            and calibration != info.default_calibration and sparsity_type != "structured":
        parts.append(calibration)
    if per and sparsity_type == "unstructured" and info and per != info.group:
        parts.append(f"per {per}")
    if targets == "all":
        parts.append("all linears")
    if layer_sparsity == "owl":
        parts.append("OWL" + (f" λ={owl_lambda:g}" if isinstance(owl_lambda, (int, float)) and owl_lambda == owl_lambda
                              else ""))
    if compensate and sparsity_type == "structured" and info and compensate != info.compensate:
        parts.append("mean-compensated" if compensate == "mean" else "uncompensated")
    return parts


ORIGINAL_EXPONENTS = "α=1 β=1 γ=1"  # NeuronRank-OLD as the original runs it: the method's own colour


def series_label(method: str, sparsity_type: str, alpha=None, beta=None, gamma=None, *, calibration=None,
                 per=None, targets=None, layer_sparsity=None, owl_lambda=None, compensate=None) -> str:
    """One name per compared configuration: the method, its type, then series_parts."""
    return " · ".join([f"{method}", f"{sparsity_type}",
                       *series_parts(method, sparsity_type, alpha, beta, gamma, calibration=calibration, per=per,
                                     targets=targets, layer_sparsity=layer_sparsity, owl_lambda=owl_lambda,
                                     compensate=compensate)])


def series_variant(label: str) -> str:
    """The part of a series label that departs from its method's own setup ("" for the method as its paper
    runs it, NeuronRank-OLD's α=β=γ=1 included): what shifts a series' colour (views.charts.series_style)."""
    parts = label.split(" · ")[2:]
    return " · ".join(p for p in parts if p != ORIGINAL_EXPONENTS)


def series_style(label: str, method: str, sparsity_type: str) -> charts.SeriesStyle:
    """The fixed look of a compared series: a function of the series alone (never of what else is plotted)."""
    return charts.series_style(method, sparsity_type, series_variant(label))


def run_label(params: dict) -> str:
    """series_label of a stored run's parameters."""
    return series_label(params.get("prune_method"), params.get("sparsity_type"), params.get("alpha"),
                        params.get("beta"), params.get("gamma"), calibration=params.get("calibration"),
                        per=params.get("group"), targets=params.get("targets"),
                        layer_sparsity=params.get("layer_sparsity"), owl_lambda=params.get("owl_lambda"),
                        compensate=params.get("compensate"))


def comparison(frame: pd.DataFrame, sparsity_type: str | None = None) -> pd.DataFrame:
    """Finished runs -> one row per (configuration, protocol, ratio): the pruned perplexity for a
    ppl-vs-sparsity chart. A configuration is the method, the sparsity type, the exponents (for methods
    that use them), the calibration order, the comparison group, the pruned linears, OWL and the bias
    compensation: runs that differ
    in any of these are never averaged together. Repeats of the same configuration are averaged (`runs`
    says how many). `sparsity_type`: only runs of that type (the chart's filter)."""
    cols = ["series", "method", "type", "alpha", "beta", "gamma", "eval", "eval_seqlen", "eval_windows", "ratio",
            "pruned_ppl", "dense_ppl", "runs", "variant"]
    done = frame[(frame["status"] == "done") & frame["pruned_ppl"].notna()] if not frame.empty else frame
    if sparsity_type and not done.empty:
        done = done[done["type"] == sparsity_type]
    if done.empty:
        return pd.DataFrame(columns=cols)
    done = done.copy()
    uses = done["method"].map(lambda m: m in METHODS and METHODS[m].uses_exponents)
    for k in ("alpha", "beta", "gamma"):
        done[k] = done[k].where(uses, np.nan)
    for k in ("layer_sparsity", "owl_lambda", "compensate"):  # absent from frames of older run tables
        if k not in done:
            done[k] = None
    extra = [dict(layer_sparsity=ls, owl_lambda=lam, compensate=cp) for ls, lam, cp in
             zip(done["layer_sparsity"], done["owl_lambda"], done["compensate"])]
    done["series"] = [series_label(m, t, *((a, b, g) if u else ()), calibration=c, per=p, targets=tg, **x)
                      for m, t, a, b, g, u, c, p, tg, x in zip(done["method"], done["type"], done["alpha"],
                                                               done["beta"], done["gamma"], uses, done["calibration"],
                                                               done["per"], done["targets"], extra)]
    keys = ["series", "method", "type", "alpha", "beta", "gamma", "eval", "eval_seqlen", "eval_windows", "ratio"]
    out = (done.groupby(keys, as_index=False, dropna=False)
           .agg(pruned_ppl=("pruned_ppl", "mean"), dense_ppl=("dense_ppl", "mean"), runs=("run", "count"))
           .sort_values(["series", "ratio"]))
    out["variant"] = out["series"].map(series_variant)
    return out[cols].reset_index(drop=True)


def landscape(runs: list[dict], x: str, y: str, cells: list[dict] | None = None) -> pd.DataFrame:
    """Pruned perplexity of a sweep's runs as a y × x grid (NaN for cells not finished yet). With the sweep's
    stored `cells` ({"x", "y", "run"}), each cell is the run it names (queued for the sweep or reused), at
    the values the user chose; without (a sweep stored before cells were), the runs' own parameters."""
    if cells is not None:
        by_id = {r["id"]: r for r in runs}
        rows = [{"x": c["x"], "y": c["y"],
                 "ppl": ((by_id.get(c["run"]) or {}).get("result") or {}).get("pruned_ppl", np.nan)
                 if (by_id.get(c["run"]) or {}).get("status") == "done" else np.nan} for c in cells]
        frame = pd.DataFrame(rows, columns=["x", "y", "ppl"])
        if frame.empty:
            return pd.DataFrame()
        frame["ppl"] = frame["ppl"].astype(float)
        grid = frame.pivot_table(index="y", columns="x", values="ppl", aggfunc="mean", dropna=False)
        order_x = sorted(frame["x"].unique())
        order_y = sorted(frame["y"].unique())
        grid = grid.reindex(index=order_y, columns=order_x)
        grid.index.name, grid.columns.name = y, x
        return grid
    frame = runs_frame(runs)
    if frame.empty:
        return pd.DataFrame()
    grid = frame.pivot_table(index=y, columns=x, values="pruned_ppl", aggfunc="mean", dropna=False)
    cells_ = frame.pivot_table(index=y, columns=x, values="run", aggfunc="count")
    return grid.reindex(index=cells_.index, columns=cells_.columns)


def sweep_groups(runs: list[dict], stored: list[dict] = ()) -> pd.DataFrame:
    """The sweeps, newest first: group id, runs, finished, the two exponents on x and y, and the cells.
    A stored sweep (`stored`: RunStore.sweeps()) has the axes the user chose and one run per cell (some
    reused from earlier runs); an older one, known only by its runs' group, has its axes inferred."""
    status = {r["id"]: r["status"] for r in runs}
    out = []
    for sw in stored:
        ids = [c["run"] for c in sw["cells"]]
        out.append({"group": sw["group"], "runs": len(ids), "done": sum(status.get(i) == "done" for i in ids),
                    "created": sw["created"], "x": sw["x"], "y": sw["y"], "cells": sw["cells"],
                    "reused": sum(bool(c.get("reused")) for c in sw["cells"])})
    known = {sw["group"] for sw in stored}
    rows = {}
    for r in runs:
        g = r.get("grp")
        if not g or not str(g).startswith("sweep-") or g in known:
            continue
        d = rows.setdefault(g, {"group": g, "runs": 0, "done": 0, "created": r["created"], "params": []})
        d["runs"] += 1
        d["done"] += r["status"] == "done"
        d["created"] = min(d["created"], r["created"])
        d["params"].append(r["params"])
    for d in rows.values():
        x, y = swept_axes(d.pop("params"))
        out.append({**d, "x": x, "y": y, "cells": None, "reused": 0})
    frame = pd.DataFrame(out, columns=["group", "runs", "done", "created", "x", "y", "cells", "reused"])
    return frame.sort_values("created", ascending=False).reset_index(drop=True)


def swept_axes(params: list[dict]) -> tuple[str, str]:
    """Which two exponents an older sweep's runs vary (the first two that take more than one value): only
    for sweeps stored before their axes were."""
    varied = [k for k in EXPONENT_LABELS if len({p.get(k) for p in params}) > 1]
    rest = [k for k in ("alpha", "gamma", "beta") if k not in varied]
    x, y = (varied + rest)[:2]
    return x, y


# the history table: what a reader looks for first, then the rest (the CSV has every column)
HISTORY_COLUMNS = ["run", "status", "method", "type", "ratio", "pruned_ppl", "dense_ppl", "mlp_sparsity",
                   "alpha", "beta", "gamma", "last", "calibration", "per", "targets", "eval", "eval_seqlen",
                   "eval_windows", "seconds", "created", "origin", "group", "eval_tasks", "model", "calib",
                   "nsamples", "seqlen", "seed", "error"]


# pixel widths of the leading columns: together they fit a 1280 px projector at 150 % zoom (about 800 px of
# table), so the pruned perplexity is read without scrolling sideways
HISTORY_WIDTHS = {"run": 48, "status": 68, "method": 118, "type": 96, "ratio": 54, "pruned_ppl": 92, "dense_ppl": 86}


def history_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The run history as the page shows it: the run, its status and configuration, then the pruned and
    dense perplexity (visible without scrolling sideways), then the rest."""
    cols = [c for c in HISTORY_COLUMNS if c in frame.columns] + [c for c in frame.columns if c not in HISTORY_COLUMNS]
    return frame[cols]


def comparison_table(comp: pd.DataFrame) -> pd.DataFrame:
    """The comparison chart's numbers beside it: one row per series, one column per sparsity ("50 %"), the
    pruned perplexity as the chart's hover shows it."""
    if comp.empty:
        return pd.DataFrame(columns=["series"])
    table = comp.pivot_table(index="series", columns="ratio", values="pruned_ppl", aggfunc="mean")
    table.columns = [f"{r:.0%}".replace("%", " %") for r in table.columns]
    return table.reset_index()


def reference_ppl(frame: pd.DataFrame, sparsity_type: str, ratio: float, eval_source: str, eval_seqlen: int,
                  eval_windows: int, calibration: str | None = "one-pass") -> dict[str, float]:
    """The baselines' pruned perplexity at the same sparsity and evaluation protocol (finished runs,
    repeats averaged), each in its own setup (its own comparison group, MLP only) with the sweep's
    calibration order, and the dense perplexity: what a sweep's cells are read against."""
    if frame.empty:
        return {}
    same = frame[(frame["status"] == "done") & (frame["type"] == sparsity_type)
                 & (np.isclose(frame["ratio"].astype(float), float(ratio)))
                 & (frame["eval"] == eval_source) & (frame["eval_seqlen"] == eval_seqlen)
                 & (frame["eval_windows"] == eval_windows)]
    out = {}
    for method in ("wanda", "magnitude"):
        runs = same[same["method"] == method]
        want = series_label(method, sparsity_type, calibration=calibration)
        label = [series_label(method, sparsity_type, calibration=c, per=p, targets=t, layer_sparsity=ls,
                              compensate=cp)
                 for c, p, t, ls, cp in zip(runs["calibration"], runs["per"], runs["targets"],
                                            runs["layer_sparsity"], runs["compensate"])]
        v = runs.loc[[lab == want for lab in label], "pruned_ppl"].dropna()
        if len(v):
            out[method] = float(v.mean())
    dense = same["dense_ppl"].dropna()
    if len(dense):
        out["dense"] = float(dense.iloc[0])
    return out


def best_cell(grid: pd.DataFrame) -> tuple | None:
    """(y value, x value, ppl) of the lowest finished cell of a landscape grid, or None."""
    if grid.empty or not np.isfinite(grid.to_numpy(dtype=float)).any():
        return None
    stacked = grid.stack().astype(float)
    stacked = stacked[np.isfinite(stacked)]
    (yv, xv), ppl = stacked.idxmin(), float(stacked.min())
    return yv, xv, ppl


def decade_ticks(log_values) -> list[float]:
    """Colour-bar ticks on a log10 scale: whole decades when the values span two or more, else 4 even steps."""
    finite = np.asarray(log_values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return []
    lo, hi = int(np.floor(finite.min())), int(np.ceil(finite.max()))
    if hi - lo >= 2:
        return [float(t) for t in range(lo, hi + 1)]
    return [float(t) for t in np.linspace(finite.min(), finite.max(), 4)]
