"""What a run is, before anything runs (no torch): the request fields with their defaults, bounds, choices,
labels and help (fields.py, requests.py), the pruning methods' registry (methods.py), the published
protocols (protocols.py)."""
