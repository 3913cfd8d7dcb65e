"""The record of runs (no torch): the SQLite run store, with the identity of the process that runs each
(pid + start time), and the progress messages runs write and pages read."""
