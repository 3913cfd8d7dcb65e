"""Protocols: one switch for every choice of a published setup (the CLI's --protocol). The seqlen is the
model's context, capped at MAX_SEQLEN, for calibration and evaluation alike (upstream's model.seqlen)."""

from __future__ import annotations

from dataclasses import replace

from neuronrank.config.requests import MAX_SEQLEN, PruneRequest
from neuronrank.errors import UserError

PROTOCOLS: dict[str, dict] = {
    "wanda": dict(targets="all", group="row", nsamples=128, calib="c4", calibration="sequential",
                  eval="wikitext2", eval_windows=0),
}


def with_protocol(req: PruneRequest, name: str, context: int | None) -> PruneRequest:
    """`req` with every setting of protocol `name` (the seqlens from the model's `context`)."""
    if name not in PROTOCOLS:
        raise UserError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    seqlen = min(int(context), MAX_SEQLEN) if context else MAX_SEQLEN
    return replace(req, **PROTOCOLS[name], seqlen=seqlen, eval_seqlen=seqlen)


def protocol_settings(req: PruneRequest, name: str) -> str:
    """The settings a protocol made, as one line to print."""
    keys = list(PROTOCOLS[name]) + ["seqlen", "eval_seqlen"]
    return f"protocol {name}: " + ", ".join(f"{k}={getattr(req, k)}" for k in keys)
