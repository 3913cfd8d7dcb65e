"""Clean splits: wikitext2 and c4 as upstream Wanda's lib/data.py reads them, from local files in the
hub's layout ($NEURONRANK_DATA), never the network; calibration never reads evaluation text."""

import gzip
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from neuronrank.data import text as corpora
from neuronrank.engine.models import load_tokenizer
from neuronrank.engine.windows import calibration_set, evaluation_set

WORDS = "alpha beta gamma delta quick brown fox lazy dog markets rose team scored cup final".split()


def doc(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    rng = random.Random(3)
    wt = tmp_path / "wikitext" / "wikitext-2-raw-v1"
    wt.mkdir(parents=True)
    train = [f" = train {i} = " if i % 7 == 0 else doc(rng, 30) for i in range(200)]
    test = ["", " = Test = "] + [doc(rng, 30) + " TESTONLY" for _ in range(50)]
    pq.write_table(pa.table({"text": train}), wt / "train-00000-of-00001.parquet")
    pq.write_table(pa.table({"text": test}), wt / "test-00000-of-00001.parquet")
    c4 = tmp_path / "c4" / "en"
    c4.mkdir(parents=True)
    with gzip.open(c4 / "c4-train.00000-of-01024.json.gz", "wt") as f:
        for i in range(60):
            f.write(json.dumps({"text": doc(rng, 5 if i % 3 else 80), "timestamp": "x", "url": "u"}) + "\n")
    with gzip.open(c4 / "c4-validation.00000-of-00008.json.gz", "wt") as f:
        for i in range(1200):
            f.write(json.dumps({"text": f"v{i} " + doc(rng, 4), "timestamp": "x", "url": "u"}) + "\n")
    monkeypatch.setenv("NEURONRANK_DATA", str(tmp_path))
    return tmp_path, train, test


def test_wikitext2_calibrates_on_train_and_evaluates_on_test(data_root, tiny_dir):
    _, train, test = data_root
    tok = load_tokenizer(str(tiny_dir))
    calib = corpora.load_corpus("wikitext2", role="calib")
    ev = corpora.load_corpus("wikitext2", role="eval")
    assert calib.text == " ".join(train) and ev.text == "\n\n".join(test)
    assert "TESTONLY" not in calib.text and calib.fingerprint != ev.fingerprint
    windows, sha = calibration_set(tok, calib, 8, 12, seed=0)
    # upstream: trainenc = tokenizer(" ".join(train)); random.seed(0); i = random.randint(0, n - seqlen - 1)
    enc = tok(" ".join(train), return_tensors="pt").input_ids
    random.seed(0)
    expect = []
    for _ in range(8):
        i = random.randint(0, enc.shape[1] - 12 - 1)
        expect.append(enc[0, i:i + 12])
    assert torch.equal(windows, torch.stack(expect))


def test_c4_sampler_equals_upstream_algorithm(data_root, tiny_dir):
    root, _, _ = data_root
    tok = load_tokenizer(str(tiny_dir))
    calib = corpora.load_corpus("c4", role="calib")
    windows, _ = calibration_set(tok, calib, 6, 20, seed=0)
    # upstream lib/data.py get_c4, over the same json.gz shard
    with gzip.open(root / "c4" / "en" / "c4-train.00000-of-01024.json.gz", "rt") as f:
        traindata = [json.loads(line) for line in f]
    random.seed(0)
    expect = []
    for _ in range(6):
        while True:
            i = random.randint(0, len(traindata) - 1)
            enc = tok(traindata[i]["text"], return_tensors="pt")
            if enc.input_ids.shape[1] > 20:
                break
        i = random.randint(0, enc.input_ids.shape[1] - 20 - 1)
        expect.append(enc.input_ids[0, i:i + 20])
    assert torch.equal(windows, torch.stack(expect))


def test_c4_evaluates_on_the_first_1100_validation_docs(data_root, tiny_dir):
    ev = corpora.load_corpus("c4", role="eval")
    assert len(ev.docs) == 1100 and ev.separator == " " and ev.docs[-1].startswith("v1099 ")
    tok = load_tokenizer(str(tiny_dir))
    win, _ = evaluation_set(tok, "c4", 8, None)
    ids = tok(" ".join(ev.docs), return_tensors="pt").input_ids[0]
    assert win.shape[0] == 256 and torch.equal(win.flatten(), ids[:256 * 8])  # valenc[:, :256 * seqlen]
    assert not set(ev.docs) & set(corpora.load_corpus("c4", role="calib").docs)


def test_a_missing_split_is_one_clear_error(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("NEURONRANK_DATA", str(tmp_path))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(corpora.UserError, match="'wikitext2' \\(calib split\\) is not available offline"):
        corpora.load_corpus("wikitext2", role="calib")


def test_protocol_wanda_sets_every_choice_and_prints_them(data_root, tiny_dir, capsys):
    from neuronrank.cli import main
    from neuronrank.config.protocols import with_protocol
    from neuronrank.config.requests import PruneRequest

    req = with_protocol(PruneRequest(prune_method="wanda", nsamples=3, group="matrix"), "wanda", 8192)
    assert (req.targets, req.comparison_group, req.nsamples, req.calib, req.calibration, req.eval,
            req.eval_windows, req.seqlen, req.eval_seqlen) == ("all", "row", 128, "c4", "sequential",
                                                               "wikitext2", 0, 4096, 4096)
    root, _, _ = data_root
    rng = random.Random(5)
    with gzip.open(root / "c4" / "en" / "c4-train.00000-of-01024.json.gz", "wt") as f:
        for _ in range(20):
            f.write(json.dumps({"text": doc(rng, 600)}) + "\n")
    wt = root / "wikitext" / "wikitext-2-raw-v1" / "test-00000-of-00001.parquet"
    pq.write_table(pa.table({"text": [doc(rng, 400) for _ in range(4)]}), wt)
    assert main(["prune", "--model", str(tiny_dir), "--prune_method", "wanda", "--protocol", "wanda",
                 "--json"]) == 0
    out = capsys.readouterr().out
    assert "protocol wanda: targets=all, group=row, nsamples=128, calib=c4, calibration=sequential, " \
           "eval=wikitext2, eval_windows=0, seqlen=256, eval_seqlen=256" in out
    res = json.loads(out.strip().splitlines()[-1])
    assert res["protocol"]["source"] == "wikitext2" and res["protocol"]["seqlen"] == 256
    assert res["sparsity"]["attention"] == pytest.approx(0.5)
