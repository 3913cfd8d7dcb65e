"""Runs and their record: the run store (no torch), progress messages, the queue with its dispatcher
and workers (no torch), and the run kinds a worker executes (kinds.py loads the torch rooms)."""
