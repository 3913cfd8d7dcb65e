"""Text the pages show that is not theirs — from the URL, the user or a stored run — shown as text, and the
URL's query parameters, each checked before anything uses it. No streamlit: the pages call these."""

from __future__ import annotations

import re

from neuronrank.config.requests import STUDY_NAME
from neuronrank.errors import UserError


# ----------------------------------------------------------------------------------------------
# text from the URL, the user or a stored run, shown in markdown elements


# every ASCII punctuation character that can start or shape markdown (CommonMark lets each be
# backslash-escaped); ' " , ; ? / % @ cannot, and stay readable
_MARKDOWN_PUNCT = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$:&=^])")


# GitHub-style autolinks are found in the rendered text, after escapes are resolved (Streamlit links a bare
# https://x or www.x in a text node): an invisible WORD JOINER breaks each pattern — "://", "www.", "@"
_AUTOLINK = re.compile(r"(?<=:)(?=//)|(?<=www)(?=\.)|(?<=@)", re.IGNORECASE)
WORD_JOINER = "\u2060"


def plain(text) -> str:
    """`text` for a markdown element (st.error, st.caption, a label), so it shows as typed: backslash-
    escaped (never a link, an image the browser fetches, emphasis, HTML, LaTeX or a Streamlit colour
    directive), and bare URLs and addresses broken by an invisible WORD JOINER (never an autolink)."""
    return _MARKDOWN_PUNCT.sub(r"\\\1", _AUTOLINK.sub(WORD_JOINER, str(text)))


def code(text) -> str:
    """`text` as an inline code span (nothing inside is markdown), fenced by more backticks than it holds."""
    text = str(text).replace("\n", " ")
    runs = [len(r) for r in re.findall(r"`+", text)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


# ----------------------------------------------------------------------------------------------
# query parameters: each one is checked before anything uses it

RUN_ID_MAX = 2**63 - 1  # SQLite's INTEGER
URL_NUMBERS = {"alpha": (0.0, 3.0), "beta": (0.0, 3.0), "gamma": (0.0, 3.0), "sparsity": (0.0, 0.95)}
_RUN_ID = re.compile(r"[0-9]{1,19}")
_ENTRY_KEY = re.compile(r"[0-9a-f]{16}")


def _shown(raw: str, limit: int = 40) -> str:
    raw = str(raw)
    return raw if len(raw) <= limit else raw[:limit] + "…"


def url_value(name: str, raw: str):
    """The value of query parameter `name`, checked: a run id (`run`, `search_run`), a study name
    (`study`), a statistics entry key (`entry`, and the Compare page's `entry2`), an exponent or sparsity
    within its slider's range.
    Anything else raises UserError with a short notice (the raw text cut to 40 characters)."""
    text = str(raw).strip()
    if name in ("run", "search_run"):
        if _RUN_ID.fullmatch(text) and 1 <= int(text) <= RUN_ID_MAX:
            return int(text)
        what = "a run id"
    elif name == "study":
        if STUDY_NAME.fullmatch(text):
            return text
        what = "a study name"
    elif name in ("entry", "entry2"):  # entry2: the Compare page's second entry
        if _ENTRY_KEY.fullmatch(text):
            return text
        what = "a statistics entry key"
    elif name in URL_NUMBERS:
        lo, hi = URL_NUMBERS[name]
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is not None and lo <= value <= hi:  # NaN fails both
            return round(value, 2)
        what = f"a number from {lo:g} to {hi:g}"
    else:
        raise KeyError(f"no query parameter {name!r}")
    raise UserError(f"The link's {name}={_shown(text)} is not {what}; it was ignored.")
