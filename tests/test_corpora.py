"""Text sources and the two windowing protocols."""

import json

import numpy as np
import pytest

from neuronrank import UserError
from neuronrank.data.text import calibration_windows, evaluation_windows, load_corpus


def test_news_corpus_is_cleaned():
    c = load_corpus("news")
    # 2,225 files: 98 byte-identical duplicates plus 2 that differ only in white space are dropped
    assert len(c.docs) == 2225 - 100
    assert 800_000 < c.words < 860_000
    assert not any("\r" in d for d in c.docs)
    assert "\ufffd" not in c.text or c.text.count("\ufffd") < 5  # the cp1252 file decodes


def test_wiki_corpus():
    c = load_corpus("wiki")
    assert len(c.docs) > 9000
    assert 700_000 < c.words < 800_000
    assert load_corpus("wiki").fingerprint == c.fingerprint  # deterministic


def test_file_sources(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\n\nsecond doc\n\nfirst doc")
    c = load_corpus(f"file:{tmp_path / 'a.txt'}")
    assert c.docs == ("first doc", "second doc")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "hello"}) + "\n\n" + json.dumps({"text": "world"}))
    assert load_corpus(f"file:{tmp_path / 'b.jsonl'}").docs == ("hello", "world")
    import pandas as pd

    pd.DataFrame({"text": ["x y", "z"]}).to_parquet(tmp_path / "c.parquet")
    assert load_corpus(f"file:{tmp_path / 'c.parquet'}").docs == ("x y", "z")


@pytest.mark.parametrize("content,name,message", [
    ("", "empty.txt", "is empty"),
    (b"\xff\xfe bad", "bin.txt", "not UTF-8"),
    ('{"body": "x"}\n', "nofield.jsonl", "no string field 'text'"),
    ("not json\n", "broken.jsonl", "not JSON"),
    ("x", "doc.pdf", "unsupported text file type"),
])
def test_bad_files(tmp_path, content, name, message):
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError, match=message):
        load_corpus(f"file:{p}")


def test_unknown_and_missing_sources(tmp_path):
    with pytest.raises(UserError, match="unknown text source 'bogus'"):
        load_corpus("bogus")
    with pytest.raises(UserError, match="not found"):
        load_corpus(f"file:{tmp_path / 'nope.txt'}")


def test_calibration_windows_are_seeded_and_inside_the_stream():
    ids = np.arange(1000, dtype=np.int32)
    a = calibration_windows(ids, 5, 64, seed=3)
    b = calibration_windows(ids, 5, 64, seed=3)
    c = calibration_windows(ids, 5, 64, seed=4)
    assert a.shape == (5, 64) and a.dtype.is_floating_point is False
    assert (a == b).all() and not (a == c).all()
    # each window is a contiguous run of the stream
    assert ((a[:, 1:] - a[:, :-1]) == 1).all() and int(a.max()) < 1000


def test_evaluation_windows_follow_the_wanda_protocol():
    ids = np.arange(1000, dtype=np.int32)
    w = evaluation_windows(ids, 300)
    assert w.shape == (3, 300) and int(w[0, 0]) == 0 and int(w[2, -1]) == 899  # tail of 100 dropped
    assert evaluation_windows(ids, 300, max_windows=2).shape == (2, 300)
    with pytest.raises(UserError, match="text too short"):
        evaluation_windows(ids[:10], 300)
    with pytest.raises(UserError, match="text too short"):
        calibration_windows(ids[:10], 1, 300)
    with pytest.raises(UserError, match="seqlen must be at least 2"):
        calibration_windows(ids, 1, 1)
    with pytest.raises(UserError, match="nsamples must be at least 1"):
        calibration_windows(ids, 0, 8)
