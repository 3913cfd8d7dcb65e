"""Text sources: the offline corpora, files of the user, and one clear error for each bad one."""

import json

import pytest

from neuronrank import UserError
from neuronrank.data.text import load_corpus


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
