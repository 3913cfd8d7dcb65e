"""A run's progress: a fraction and a message "stage: detail"; a stage that counts tokens says
"done/total tokens" in its detail. `token_progress` writes that form, `stage_progress` reads it back (the
pages' stage bar; the CLI's bar per stage)."""

from __future__ import annotations

import re
import time


def token_progress(report, stage: str, start: float = 0.0, span: float = 1.0):
    """Adapt a (done, total) token callback to the run store's (fraction, message) with rate and ETA."""
    t0 = time.perf_counter()
    report(start, f"{stage}: starting", True)  # the stage shows before its first batch finishes

    def update(done: int, total: int | None) -> None:
        dt = max(time.perf_counter() - t0, 1e-9)
        rate = done / dt
        frac = done / total if total else 0.0
        eta = (total - done) / rate if total and rate > 0 else float("nan")
        report(start + span * frac, f"{stage}: {done:,}/{total or 0:,} tokens, {rate:,.0f} tok/s, ETA {eta:.0f}s",
               done == total)

    return update


_TOKENS = re.compile(r"([\d,]+)/([\d,]+) tokens")


def stage_progress(message: str) -> tuple[str, str, float | None]:
    """A run's progress message "stage: detail" -> (stage, detail, the stage's own fraction or None)."""
    stage, _, detail = message.partition(":")
    m = _TOKENS.search(detail)
    fraction = None
    if m:
        done, total = (int(x.replace(",", "")) for x in m.groups())
        fraction = min(1.0, done / total) if total else None
    return stage.strip(), detail.strip(), fraction
