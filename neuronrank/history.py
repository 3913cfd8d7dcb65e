"""The run history as tables: flat rows for display and CSV, the method comparison, and the exponent
landscape of a sweep. pandas only; the app and tests share these."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from neuronrank.requests import EXPONENT_LABELS

EXPONENTS = EXPONENT_LABELS


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
            "dense_ppl": res.get("dense_ppl", np.nan), "pruned_ppl": res.get("pruned_ppl", np.nan),
            "mlp_sparsity": res.get("sparsity", {}).get("mlp", np.nan),
            "eval": proto.get("source"), "eval_seqlen": proto.get("seqlen"), "eval_windows": proto.get("windows"),
            "model": p.get("model"), "calib": p.get("calib"), "nsamples": p.get("nsamples"),
            "seqlen": p.get("seqlen"), "seed": p.get("seed"), "group": r.get("grp"), "origin": r.get("origin"),
            "seconds": (r["finished"] - r["started"]) if r.get("finished") and r.get("started") else np.nan,
            "created": dt.datetime.fromtimestamp(r["created"]).strftime("%Y-%m-%d %H:%M:%S"),
            "error": r.get("error"),
        })
    return pd.DataFrame(rows)


def comparison(frame: pd.DataFrame) -> pd.DataFrame:
    """Finished runs as (method, type, ratio) -> mean pruned ppl, for a ppl-vs-sparsity chart."""
    done = frame[(frame["status"] == "done") & frame["pruned_ppl"].notna()]
    if done.empty:
        return pd.DataFrame(columns=["method", "type", "ratio", "pruned_ppl", "runs"])
    return (done.groupby(["method", "type", "ratio"], as_index=False)
            .agg(pruned_ppl=("pruned_ppl", "mean"), runs=("run", "count"))
            .sort_values(["method", "type", "ratio"]))


def landscape(runs: list[dict], x: str, y: str) -> pd.DataFrame:
    """Pruned perplexity of a sweep's runs as a y × x grid (NaN for cells not finished yet)."""
    frame = runs_frame(runs)
    if frame.empty:
        return pd.DataFrame()
    grid = frame.pivot_table(index=y, columns=x, values="pruned_ppl", aggfunc="mean", dropna=False)
    cells = frame.pivot_table(index=y, columns=x, values="run", aggfunc="count")
    return grid.reindex(index=cells.index, columns=cells.columns)
