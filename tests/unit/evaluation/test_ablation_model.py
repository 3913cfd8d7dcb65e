"""Role ablation on a tiny model: the perplexities of `ablate` recomputed independently (roles by hand,
the neurons zeroed in a fresh copy of the model, perplexity through Hugging Face's own loss), the
weights restored bit for bit, layer bands, single neurons, a queued run."""

import math
import time

import numpy as np
import pytest
import torch

from neuronrank import UserError
from neuronrank.analysis import ablation
from neuronrank.config.requests import AblateRequest
from neuronrank.data.specs import resolve
from neuronrank.engine import models
from neuronrank.engine.statistics import get_stats
from neuronrank.engine.windows import evaluation_set
from neuronrank.evaluation.ablation import ablate, zeroed


@pytest.fixture(scope="module")
def base(tiny_dir, text_file):
    src = f"file:{text_file}"
    return dict(model=str(tiny_dir), calib=src, nsamples=4, seqlen=16, seed=0, eval=src, eval_seqlen=16,
                eval_windows=4, device="cpu")


@pytest.fixture(scope="module")
def stats(base):
    return get_stats(AblateRequest(**base).stats_request()).stats


def fresh(base):
    return models.load(base["model"], "cpu", "fp32")


def hf_ppl(model, windows) -> float:
    """exp(Σ NLL / Σ predicted tokens), the NLL from the model's own loss (mean over a window's seqlen-1
    predictions)."""
    nll = 0.0
    with torch.no_grad():
        for w in windows:
            loss = model(input_ids=w[None], labels=w[None]).loss
            nll += float(loss.double()) * (len(w) - 1)
    return math.exp(nll / (len(windows) * (windows.shape[1] - 1)))


def zero_by_hand(model, mask):
    """gate_proj and up_proj rows, down_proj columns of every masked neuron set to 0 (plain indexing)."""
    with torch.no_grad():
        for layer, row in enumerate(mask):
            idx = torch.from_numpy(np.flatnonzero(row))
            mlp = model.model.layers[layer].mlp
            mlp.gate_proj.weight[idx] = 0
            mlp.up_proj.weight[idx] = 0
            mlp.down_proj.weight[:, idx] = 0


def roles_by_hand(stats, q):
    tf, idf = stats.tf, stats.idf
    dead = stats.n_active < 0.001 * stats.tokens[:, None]
    hi_tf = tf > np.quantile(tf, q, axis=1, keepdims=True)
    hi_idf = idf > np.quantile(idf, q, axis=1, keepdims=True)
    return {"critical": hi_tf & hi_idf & ~dead, "important": hi_tf & ~hi_idf & ~dead,
            "moderate": ~hi_tf & hi_idf & ~dead, "prune-first": ~hi_tf & ~hi_idf & ~dead, "dead": dead}


def test_ablation_recomputed_in_a_fresh_model(base, stats):
    req = AblateRequest(**base, classes="critical,prune-first", quantile=0.75, controls=2, neurons="1:3,0:40")
    model, tok = fresh(base)
    res = ablate(model, tok, req, stats, resolve(base["model"]).identity())
    win, _ = evaluation_set(tok, base["eval"], 16, 4)
    assert res["eval"] == {"source": base["eval"], "seqlen": 16, "windows": 4, "tokens": 60}
    assert res["evaluations"] == 2 * 3 + 2
    dense_model, _ = fresh(base)
    assert res["dense_ppl"] == pytest.approx(hf_ppl(dense_model, win), rel=1e-5)
    by_hand = roles_by_hand(stats, 0.75)
    rows = {r["class"]: r for r in res["classes"]}
    assert list(rows) == ["critical", "prune-first"]
    for cls, row in rows.items():
        mask = by_hand[cls]
        assert mask.any() and row["neurons"] == int(mask.sum()) and row["per_layer"] == mask.sum(axis=1).tolist()
        m, _ = fresh(base)
        zero_by_hand(m, mask)
        assert row["ppl"] == pytest.approx(hf_ppl(m, win), rel=1e-5)
        assert row["ppl"] != pytest.approx(res["dense_ppl"], rel=1e-6)  # zeroing changed something
        # the first control: the seeded random set with the class's per-layer counts, zeroed the same way
        control = ablation.random_like(mask, ablation.control_seed(0, cls, None, 0))
        assert control.sum(axis=1).tolist() == row["per_layer"] and not np.array_equal(control, mask)
        m, _ = fresh(base)
        zero_by_hand(m, control)
        assert len(row["random_ppl"]) == 2 and row["random_ppl"][0] == pytest.approx(hf_ppl(m, win), rel=1e-5)
        assert row["random_ppl"][0] != pytest.approx(row["random_ppl"][1], rel=1e-9)  # two different sets
        assert row["random_mean"] == pytest.approx(np.mean(row["random_ppl"]))
        assert row["random_std"] == pytest.approx(np.std(row["random_ppl"], ddof=1))
        assert row["delta_ppl"] == pytest.approx(row["ppl"] - res["dense_ppl"])
    for n in res["neurons"]:
        mask = np.zeros((2, 48), dtype=bool)
        mask[n["layer"], n["neuron"]] = True
        m, _ = fresh(base)
        zero_by_hand(m, mask)
        assert n["ppl"] == pytest.approx(hf_ppl(m, win), rel=1e-5)
    assert [(n["layer"], n["neuron"]) for n in res["neurons"]] == [(1, 3), (0, 40)]


def test_weights_are_restored_bit_for_bit(base, stats):
    model, tok = fresh(base)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    req = AblateRequest(**base, classes="critical,important,moderate,prune-first,dead", controls=1, layers="0,1",
                        neurons="0:0")
    ablate(model, tok, req, stats, resolve(base["model"]).identity())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_zeroed_block_and_restore_after_an_error(tiny):
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    mlp = tiny.model.layers[1].mlp
    with zeroed(tiny, {1: [2, 5, 5], 0: []}) as n:
        assert n == 2
        assert (mlp.gate_proj.weight[[2, 5]] == 0).all() and (mlp.up_proj.weight[[2, 5]] == 0).all()
        assert (mlp.down_proj.weight[:, [2, 5]] == 0).all()
        assert (mlp.gate_proj.weight[[0, 1, 3]] != 0).any()  # nothing else
        changed = [k for k in before if not torch.equal(before[k], tiny.state_dict()[k])]
        assert sorted(changed) == sorted(f"model.layers.1.mlp.{p}_proj.weight" for p in ("gate", "up", "down"))
    with pytest.raises(RuntimeError):
        with zeroed(tiny, {0: [1]}):
            raise RuntimeError("cancelled")
    assert all(torch.equal(before[k], v) for k, v in tiny.state_dict().items())
    with pytest.raises(UserError, match="layer 0 has neurons 0-47"):
        with zeroed(tiny, {0: [48]}):
            pass
    with pytest.raises(UserError, match="not a decoder layer"):
        with zeroed(tiny, {0: [1], 7: [1]}):
            pass
    assert all(torch.equal(before[k], v) for k, v in tiny.state_dict().items())


def test_layer_bands(base, stats):
    req = AblateRequest(**base, classes="important", quantile=0.5, controls=1, layers="1,0-1")
    model, tok = fresh(base)
    res = ablate(model, tok, req, stats, resolve(base["model"]).identity())
    win, _ = evaluation_set(tok, base["eval"], 16, 4)
    mask = roles_by_hand(stats, 0.5)["important"]
    assert [(r["class"], r["layers"]) for r in res["classes"]] == [("important", "1-1"), ("important", "0-1")]
    one, both = res["classes"]
    assert one["per_layer"] == [0, int(mask[1].sum())] and both["per_layer"] == mask.sum(axis=1).tolist()
    banded = mask.copy()
    banded[0] = False
    m, _ = fresh(base)
    zero_by_hand(m, banded)
    assert one["ppl"] == pytest.approx(hf_ppl(m, win), rel=1e-5)
    control = ablation.random_like(banded, ablation.control_seed(0, "important", ablation.Band(1, 1), 0))
    assert control[0].sum() == 0 and control[1].sum() == banded[1].sum()
    m, _ = fresh(base)
    zero_by_hand(m, control)
    assert one["random_ppl"][0] == pytest.approx(hf_ppl(m, win), rel=1e-5)


def test_request_checks_and_cost():
    req = AblateRequest(classes="dead,critical", controls=4, layers="0-9,10-19,20-29", neurons="3:17")
    assert req.evaluation_count() == 2 * 3 * 5 + 1
    assert req.normalized().classes == "critical,dead" and req.normalized().quantile == 0.9
    assert AblateRequest(tf_threshold=0.1, idf_threshold=2).normalized().quantile is None
    assert AblateRequest(classes="none", neurons="1:2").normalized().classes == "none"
    for kwargs, needle in ((dict(quantile=1.0), "quantile must be between 0 and 1"),
                           (dict(quantile=0.5, tf_threshold=1.0, idf_threshold=2.0), "either --quantile"),
                           (dict(tf_threshold=1.0), "--tf-threshold needs --idf-threshold"),
                           (dict(idf_threshold=float("nan"), tf_threshold=1.0), "finite"),
                           (dict(classes="none"), "nothing to ablate"),
                           (dict(controls=-1), "controls must be between 0 and 100"),
                           (dict(layers="3-1"), "reversed")):
        with pytest.raises(UserError, match=needle):
            AblateRequest(**kwargs).validate()
    with pytest.raises(UserError, match="layers 0-1"):
        AblateRequest(layers="0-2").validate(n_layers=2, width=48)


def test_a_queued_ablation_is_stored_with_its_kind(base):
    from neuronrank.queue import jobs
    from neuronrank.runs.store import RunStore

    params = {**base, "classes": "critical", "quantile": 0.5, "controls": 1, "neurons": "0:1"}
    params.pop("device")
    store = RunStore()
    rid = jobs.submit("ablate", AblateRequest(**params))
    t = time.time()
    while store.get(rid)["status"] not in ("done", "failed") and time.time() - t < 180:
        time.sleep(0.2)
    run = store.get(rid)
    assert run["status"] == "done", run["error"]
    assert run["kind"] == "ablate" and run["params"]["quantile"] == 0.5 and run["params"]["classes"] == "critical"
    res = run["result"]
    assert set(res) >= {"dense_ppl", "eval", "classes", "neurons", "stats_key"}
    assert set(res["classes"][0]) >= {"class", "neurons", "ppl", "random_ppl"}
    assert res["classes"][0]["neurons"] > 0 and len(res["classes"][0]["random_ppl"]) == 1
    assert res["neurons"][0]["layer"] == 0
    assert store.list(kind="ablate")[0]["id"] == rid
