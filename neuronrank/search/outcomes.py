"""Every study's measured trials as plain rows, for the Exponents page's outcome map (neuronrank.views.outcomes).

    study_outcomes(url=None) -> [{"study", "protocol", "evaluation", "baselines", "trials": [...]}]

Only complete trials count: a trial that successive halving stopped was evaluated on fewer windows, so its
perplexity belongs to another protocol. A study that cannot be read (a damaged record, a half-created study)
is left out and counted; the storage's own damage is handled by study.open_storage (moved aside, one notice).
"""

from __future__ import annotations

import logging

import optuna
from optuna.trial import TrialState

from neuronrank.search.study import PARAMS, open_storage, storage_errors

log = logging.getLogger(__name__)


def study_outcomes(url: str | None = None) -> tuple[list[dict], int]:
    """(rows, studies left out): each study's protocol, evaluation protocol as measured, baselines and its
    complete trials {"number", "alpha", "beta", "gamma", "ppl"}."""
    storage = open_storage(url, heartbeat=False)
    with storage_errors(url):
        summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    out, left = [], 0
    for s in summaries:
        attrs = s.user_attrs
        if not isinstance(attrs.get("protocol"), dict) or not isinstance(attrs.get("evaluation"), dict):
            continue  # not started yet: no trial measured
        try:
            with storage_errors(url):
                study = optuna.load_study(study_name=s.study_name, storage=storage)
                trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            out.append({"study": s.study_name, "protocol": attrs["protocol"], "evaluation": attrs["evaluation"],
                        "baselines": attrs.get("baselines") or {},
                        "trials": [{"number": t.number, **{n: t.params.get(n) for n in PARAMS}, "ppl": t.value}
                                   for t in trials]})
        except Exception as e:  # one unreadable study must not hide the others
            left += 1
            log.warning("study %s left out of the outcome map: %s", s.study_name, e)
    return out, left
