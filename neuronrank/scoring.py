"""NeuronRank-OLD scores, roles and overlap, as the README's example and the design contract name them
(`neuronrank.scoring.score`): a face over analysis/scoring.py. Nothing inside the package imports it."""

from neuronrank.analysis.scoring import DEAD, DEAD_BELOW, MAX_EXPONENT, ROLE_TEXT, ROLES, check_exponent, dead_mask, \
    lowest, overlap, roles, score, score_components

__all__ = ["DEAD", "DEAD_BELOW", "MAX_EXPONENT", "ROLE_TEXT", "ROLES", "check_exponent", "dead_mask", "lowest",
           "overlap", "roles", "score", "score_components"]
