"""What a page shows of a role ablation (an `ablate` run's result): one row per class and band with its
random control, the protocol in one sentence, the cost before a run. numpy and pandas only.

The result's schema is evaluation/ablation.py's `ablate` (the CLI's --json without run_id/command).
"""

from __future__ import annotations

from typing import Mapping

import pandas as pd

from neuronrank.analysis.numbers import ppl_text

CLASS_COLUMNS = ["class", "layers", "neurons", "ppl", "delta_ppl", "random_mean", "random_std", "controls",
                 "ratio"]


def class_table(result: Mapping) -> pd.DataFrame:
    """One row per (class, band): neurons, ppl with the class zeroed, Δppl from dense, the random sets' mean
    and sample sd, how many there were, and ppl / random mean (NaN where a value is missing: an empty class
    has no controls; a diverged perplexity is stored as null)."""
    rows = []
    for c in result.get("classes", []):
        mean = c.get("random_mean")
        ratio = c["ppl"] / mean if c.get("ppl") is not None and mean else None
        rows.append({"class": c["class"], "layers": c.get("layers"), "neurons": c["neurons"], "ppl": c.get("ppl"),
                     "delta_ppl": c.get("delta_ppl"), "random_mean": mean, "random_std": c.get("random_std"),
                     "controls": len(c.get("random_ppl") or []), "ratio": ratio})
    return pd.DataFrame(rows, columns=CLASS_COLUMNS)


def neuron_table(result: Mapping) -> pd.DataFrame:
    return pd.DataFrame([{k: n.get(k) for k in ("layer", "neuron", "ppl", "delta_ppl")}
                         for n in result.get("neurons", [])], columns=["layer", "neuron", "ppl", "delta_ppl"])


def protocol_text(result: Mapping) -> str:
    """How the numbers were measured, in one sentence (to state next to the chart)."""
    ev, roles = result["eval"], result.get("roles", {})
    if roles.get("quantile") is not None:
        how = f"'high' = above the layer's {roles['quantile']:g} quantile of TF and of IDF"
    else:
        how = f"'high' = TF above {roles.get('tf_threshold'):g}, IDF above {roles.get('idf_threshold'):g}"
    return (f"Perplexity on {ev['source']}, seqlen {ev['seqlen']}, {ev['windows']} windows ({ev['tokens']:,} "
            f"predicted tokens); dense {ppl_text(result.get('dense_ppl'))}. Classes: {how}; dead = active on "
            f"fewer than {roles.get('dead_below', 0.001):.1%} of the tokens. Each class's neurons zeroed (gate and "
            f"up rows, down column) against {roles.get('controls', 0)} random sets with the same number of "
            f"neurons in every layer (seed {roles.get('seed', 0)}).")


def cost_text(req) -> str:
    """What a run of AblateRequest `req` costs, said before it is queued."""
    n = req.evaluation_count()
    return (f"{n} perplexity evaluation{'s' if n != 1 else ''} (each as long as a prune's evaluation), plus the "
            "dense one unless it is cached")
