"""Numbers as the project states them: a perplexity from a summed NLL, JSON's null for what is not finite,
a perplexity as text. Plain Python: every room may use them."""

from __future__ import annotations

import math


def ppl_from_nll(nll: float, tokens: int) -> float:
    """exp(Σ NLL / Σ predicted tokens); exp overflows past a mean of 709 nats: inf. A NaN stays NaN."""
    mean = nll / tokens
    return math.inf if mean > 709 else math.exp(mean)


def finite(obj):
    """`obj` with every float that is not finite as None (JSON has no inf or NaN: a diverged perplexity is
    null), through dicts, lists and tuples."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def ppl_text(x, infinite: str = "inf") -> str:
    """A perplexity with three decimals; a diverged one (inf or NaN, or stored as null) reads `infinite`."""
    return f"{x:.3f}" if x is not None and math.isfinite(float(x)) else infinite
