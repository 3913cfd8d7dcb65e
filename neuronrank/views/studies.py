"""What the Search page shows of a study, as numbers: the optimization history's points (stopped-early trials
included), the y range the baselines do not decide, whether importances mean anything yet, and how long a
study will take (before it starts and while it runs). pandas only; the trials come as search.trials_frame."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np
import pandas as pd

# below this many complete trials Optuna's importances (a random forest on a handful of points) say nothing:
# the page hides them; below IMPORTANCE_ROUGH it shows them with a caveat
IMPORTANCE_MIN = 4
IMPORTANCE_ROUGH = 10


def history_points(trials: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The optimization history: "complete" (trial, ppl), "stopped" (trial, ppl at the rung where halving
    stopped it, windows evaluated), "best" (trial, best complete ppl so far), each sorted by trial."""
    cols = ["trial", "ppl", "windows"]
    if trials.empty:
        empty = pd.DataFrame(columns=cols)
        return {"complete": empty, "stopped": empty, "best": pd.DataFrame(columns=["trial", "ppl"])}
    t = trials.sort_values("trial")
    complete = t[(t["state"] == "complete") & t["ppl"].notna()][cols].reset_index(drop=True)
    stopped = t[(t["state"] == "pruned") & t["ppl"].notna()][cols].reset_index(drop=True)
    best = complete[["trial", "ppl"]].copy()
    best["ppl"] = best["ppl"].astype(float).cummin()
    return {"complete": complete, "stopped": stopped, "best": best.reset_index(drop=True)}


def importance_note(complete: int) -> str | None:
    """None when importances are worth showing plainly; else what to say instead of (or beside) them."""
    if complete < IMPORTANCE_MIN:
        return (f"Parameter importances need at least {IMPORTANCE_MIN} complete trials (this study has {complete}): "
                "with fewer, any split of the importance is noise.")
    if complete < IMPORTANCE_ROUGH:
        return f"From {complete} complete trials only: a rough guide, not a measurement."
    return None


def halving_text(chunks) -> str:
    """How successive halving evaluates a trial: "halving after 4 and 8 of 16 windows", or none."""
    chunks = [int(c) for c in (chunks or [])]
    if len(chunks) < 2:
        return "no halving: every trial is evaluated on all windows" if chunks else "halving rungs not known yet"
    head = ", ".join(str(c) for c in chunks[:-1])
    head = " and ".join(head.rsplit(", ", 1))
    return f"halving after {head} of {chunks[-1]} windows"


# ----------------------------------------------------------------------------------------------
# how long


def halving_fraction(chunks) -> float:
    """Expected share of the full evaluation a trial costs under successive halving with reduction factor 2
    (half the trials stop at each rung): Σ_k 2^-(k+1) c_k / W over the rungs before the last, plus
    2^-(r-1) for the last. 1.0 without halving."""
    chunks = [int(c) for c in (chunks or []) if int(c) > 0]
    if len(chunks) < 2:
        return 1.0
    w = chunks[-1]
    frac = sum(2.0 ** -(k + 1) * c for k, c in enumerate(chunks[:-1])) + 2.0 ** -(len(chunks) - 1) * w
    return frac / w


@dataclass(frozen=True)
class Rates:
    eval_per_window: float  # seconds
    overhead: float  # seconds per trial beyond its evaluation (masks, restore, bookkeeping)
    source: str  # what was measured


def rates(samples: list[dict], source: str) -> Rates | None:
    """Per-window evaluation time and per-trial overhead from measured trials or runs
    ({"eval": s, "windows": n, "overhead": s}); None without a usable sample."""
    good = [s for s in samples if s.get("windows") and s.get("eval") is not None and s["eval"] > 0]
    if not good:
        return None
    # a trial stopped after 2 windows and one that ran 16 weigh by their windows: seconds / windows overall
    per_window = sum(s["eval"] for s in good) / sum(s["windows"] for s in good)
    over = [s["overhead"] for s in good if s.get("overhead") is not None]
    return Rates(per_window, statistics.median(over) if over else 0.0, source)


@dataclass(frozen=True)
class Estimate:
    low: float  # seconds: with halving stopping the usual half at each rung
    high: float  # every trial on all windows
    basis: str


def search_estimate(trials_left: int, windows: int, chunks, r: Rates | None, baselines_left: int = 0,
                    setup: float = 0.0) -> Estimate | None:
    """Seconds a study still needs: `trials_left` trials of `windows` windows at the measured rates, plus
    `baselines_left` baseline evaluations (dense, wanda, magnitude, random: each on all windows) and
    `setup` (loading). None when nothing has been measured yet."""
    if r is None:
        return None
    full = r.eval_per_window * windows
    fixed = setup + baselines_left * (full + r.overhead)
    low = fixed + trials_left * (r.overhead + full * halving_fraction(chunks))
    high = fixed + trials_left * (r.overhead + full)
    return Estimate(low, high, r.source)


def duration_text(seconds: float) -> str:
    """12 s, 4 min, 1.5 h."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def span_text(low: float, high: float) -> str:
    """A range of durations in one unit: 25–45 s, 2–4 min, 1.5–2.0 h."""
    if high < 90:
        lo, hi, unit = f"{max(low, 1):.0f}", f"{max(high, 1):.0f}", "s"
    elif high < 5400:
        lo, hi, unit = f"{max(low / 60, 1):.0f}", f"{high / 60:.0f}", "min"
    else:
        lo, hi, unit = f"{low / 3600:.1f}", f"{high / 3600:.1f}", "h"
    return f"{lo} {unit}" if lo == hi else f"{lo}–{hi} {unit}"


def estimate_text(e: Estimate | None) -> str:
    if e is None:
        return "no estimate yet: nothing comparable has been measured (the first trial will tell)"
    return f"about {span_text(e.low, e.high)} ({e.basis})"


def run_samples(runs: list[dict], model: str, seqlen: int) -> list[dict]:
    """Measured prune runs of the same model and evaluation seqlen as samples for `rates`: their pruned
    evaluation (seconds, windows) and their mask step as the per-trial overhead."""
    out = []
    for run in runs:
        res, p = run.get("result") or {}, run.get("params") or {}
        t, proto = res.get("timings") or {}, res.get("protocol") or {}
        if run.get("status") != "done" or p.get("model") != model or proto.get("seqlen") != seqlen:
            continue
        if t.get("eval") and proto.get("windows"):
            out.append({"eval": float(t["eval"]), "windows": int(proto["windows"]), "overhead": t.get("prune")})
    return out


def loading_seconds(runs: list[dict], model: str) -> float:
    """Median load time of the model in finished prune runs (0 when none)."""
    loads = [float((r.get("result") or {}).get("timings", {}).get("load", 0) or 0) for r in runs
             if r.get("status") == "done" and (r.get("params") or {}).get("model") == model]
    loads = [v for v in loads if v > 0]
    return float(np.median(loads)) if loads else 0.0
