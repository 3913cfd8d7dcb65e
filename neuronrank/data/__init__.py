"""Where things are on disk (no torch): paths and atomic writes, model specs, text sources, token streams,
the statistics cache, and what a request names on disk (inputs.py)."""
