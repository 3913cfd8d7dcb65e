"""Text sources, their token streams and windows, as the README's example names them
(`neuronrank.corpora.load_corpus`, `token_stream`, `calibration_windows`): a face over data/text.py,
data/tokens.py and engine/windows.py. Nothing inside the package imports it."""

from neuronrank.data.text import Corpus, load_corpus
from neuronrank.data.tokens import token_stream
from neuronrank.engine.windows import calibration_windows, evaluation_windows

__all__ = ["Corpus", "calibration_windows", "evaluation_windows", "load_corpus", "token_stream"]
