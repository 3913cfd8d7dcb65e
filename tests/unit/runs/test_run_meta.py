"""A run's meta note (what the app recorded beside the request: the outcome map's estimate) round-trips through
the store, stays out of the request the worker reads, and a damaged note reads as none."""

from neuronrank.config.requests import PruneRequest
from neuronrank.queue import jobs
from neuronrank.runs.store import RunStore


def test_meta_round_trips_beside_the_request(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    est = {"ppl": 41.5, "low": 37.0, "high": 46.5, "log_std": 0.11, "points": 7}
    rid = jobs.submit("prune", PruneRequest(), store=store, start_dispatcher=False, meta={"estimate": est})
    run = store.get(rid)
    assert run["meta"] == {"estimate": est} and "estimate" not in run["params"] and "meta" not in run["params"]
    assert store.get(jobs.submit("prune", PruneRequest(), store=store, start_dispatcher=False))["meta"] is None
    with store._connect() as db:
        db.execute("UPDATE runs SET meta='{not json' WHERE id=?", (rid,))
    assert store.get(rid)["meta"] is None and store.get(rid)["params"]["prune_method"] == "neuronrank_old"
