"""A run's progress: a fraction and a message "stage: detail"; a stage that counts tokens says
"done/total tokens" in its detail. `token_progress` writes that form, `stage_progress` reads it back (the
pages' stage bar; the CLI's bar per stage)."""

from __future__ import annotations

import re
import time


def token_progress(report, stage: str, start: float = 0.0, span: float = 1.0):
    """Adapt a (done, total) token callback to the run store's (fraction, message) with rate and ETA.

    The rate and the ETA leave out everything before the first report (loading the model, reading and
    tokenizing the text, the first batch's warm-up): measured from the first report on, they are the
    steady rate. The first report carries no ETA yet (its rate would include the warm-up: a pass that
    took 120 s once read "183 s left" at 32 s)."""
    report(start, f"{stage}: starting", True)  # the stage shows before its first batch finishes
    first: dict = {}

    def update(done: int, total: int | None) -> None:
        now = time.perf_counter()
        frac = done / total if total else 0.0
        if not first:
            first.update(t=now, done=done)
        text = f"{stage}: {done:,}/{total or 0:,} tokens"
        dt, dn = now - first["t"], done - first["done"]
        if dn > 0 and dt > 0:
            rate = dn / dt
            eta = (total - done) / rate if total else float("nan")
            text += f", {rate:,.0f} tok/s, ETA {eta:.0f}s"
        elif done < (total or 0):
            text += ", measuring the rate"
        report(start + span * frac, text, done == total)

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
