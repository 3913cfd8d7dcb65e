"""The exponent search: the Optuna study, its storage, workers and summaries (study.py, no torch) and a
worker's model (worker.py)."""
