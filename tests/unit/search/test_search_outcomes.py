"""The outcome map's reading of the study storage: each started study's protocol, measured evaluation protocol,
baselines and only its complete trials (a trial halving stopped was evaluated on fewer windows)."""

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from neuronrank.search.outcomes import study_outcomes
from neuronrank.search.study import open_storage

D = {k: FloatDistribution(0, 3) for k in ("alpha", "beta", "gamma")}


def test_complete_trials_of_started_studies(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.sqlite'}"
    storage = open_storage(url, heartbeat=False)
    s = optuna.create_study(study_name="s1", storage=storage)
    s.set_user_attr("protocol", {"model": "m", "sparsity_ratio": 0.5})
    s.set_user_attr("evaluation", {"source": "wiki", "seqlen": 64, "windows": 4, "tokens": 252})
    s.set_user_attr("baselines", {"wanda": {"ppl": 30.0}})
    s.add_trial(create_trial(params={"alpha": 1.0, "beta": 2.0, "gamma": 0.5}, distributions=D, value=42.0))
    s.add_trial(create_trial(params={"alpha": 2.0, "beta": 2.0, "gamma": 0.5}, distributions=D,
                             state=TrialState.PRUNED, intermediate_values={0: 99.0}))
    s.add_trial(create_trial(params={"alpha": 0.5, "beta": 0.1, "gamma": 2.5}, distributions=D, value=55.5))
    optuna.create_study(study_name="not-started", storage=storage)  # queued: no protocol yet
    rows, left = study_outcomes(url)
    assert left == 0 and [r["study"] for r in rows] == ["s1"]
    r = rows[0]
    assert r["protocol"] == {"model": "m", "sparsity_ratio": 0.5} and r["evaluation"]["windows"] == 4
    assert r["baselines"] == {"wanda": {"ppl": 30.0}}
    assert r["trials"] == [{"number": 0, "alpha": 1.0, "beta": 2.0, "gamma": 0.5, "ppl": 42.0},
                           {"number": 2, "alpha": 0.5, "beta": 0.1, "gamma": 2.5, "ppl": 55.5}]
