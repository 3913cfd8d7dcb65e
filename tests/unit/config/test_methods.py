"""neuronrank.config.methods: one registry entry per method, and the rules it states once (the calibration
order a method locks, the linears it may prune), as validation applies them."""

import pytest

from neuronrank import UserError
from neuronrank.config.methods import METHODS
from neuronrank.config.requests import PruneRequest


def test_each_method_has_its_own_default_group_and_group_overrides():
    # wanda per output row (upstream Wanda), magnitude per matrix (Wanda's prune_magnitude),
    # neuronrank_old per matrix (the original); --group overrides; a run records the group it used
    expect = {"wanda": "row", "magnitude": "matrix", "neuronrank_old": "matrix", "random": "matrix", "ria": "matrix"}
    for method, group in expect.items():
        req = PruneRequest(prune_method=method)
        assert req.group is None and req.comparison_group == group
        assert req.normalized().group == group
        other = "matrix" if group == "row" else "row"
        assert PruneRequest(prune_method=method, group=other).comparison_group == other


def test_locked_settings_are_what_validation_accepts():
    """The Prune page locks calibration order and pruned linears by Method.locked_calibration / prunes_mlp_only:
    every combination they leave open validates, and what they lock away is refused or has no effect."""
    from neuronrank.config.methods import SPARSITY_TYPES

    def locked_calibration(method, stype):
        return METHODS[method].locked_calibration(stype)

    def mlp_only(method, stype):
        return METHODS[method].prunes_mlp_only(stype)

    for method in METHODS:
        for stype in SPARSITY_TYPES:
            ratio = 0.5 if ":" in stype else 0.2
            base = dict(prune_method=method, sparsity_type=stype, sparsity_ratio=ratio)
            if stype not in METHODS[method].sparsity_types:  # no such combination at all
                with pytest.raises(UserError, match=f"prunes {METHODS[method].sparsity_text} sparsity only"):
                    PruneRequest(**base).validate()
                continue
            locked = locked_calibration(method, stype)
            if locked is None:
                for c in ("one-pass", "sequential"):
                    PruneRequest(**base, calibration=c).validate()
            else:
                assert PruneRequest(**base).normalized().calibration == (None if locked[0] == "none" else locked[0])
            for t in ("mlp", "all"):
                req = PruneRequest(**base, targets=t)
                if t == "all" and mlp_only(method, stype):
                    with pytest.raises(UserError, match="not defined for"):
                        req.validate()
                else:
                    req.validate()
    assert locked_calibration("wanda", "structured")[0] == "one-pass"
    assert locked_calibration("sparsegpt", "unstructured")[0] == "sequential"
    assert locked_calibration("magnitude", "2:4")[0] == "none"
    assert mlp_only("neuronrank_old", "unstructured") and not mlp_only("wanda", "2:4")


def test_each_method_has_its_own_setup_and_flags_override_it():
    """RIA calibrates layer by layer by default (its prune_ria), FLAP ranks across layers and compensates
    (its AL-AM default with bias); --calibration / --structured-scope / --compensate override; a run records
    what it used."""
    ria = PruneRequest(prune_method="ria")
    assert ria.calibration is None and ria.sequential and ria.normalized().calibration == "sequential"
    assert not PruneRequest(prune_method="ria", calibration="one-pass").sequential
    assert ria.tie_rule == "upstream" and PruneRequest(prune_method="wanda").tie_rule == "exact"
    assert not PruneRequest(prune_method="wanda").sequential  # the others one-pass by default
    flap = PruneRequest(prune_method="flap", sparsity_type="structured", sparsity_ratio=0.2)
    assert flap.structured_scope == "global" and flap.compensation == "mean" and not flap.sequential
    assert flap.normalized().scope == "global" and flap.normalized().compensate == "mean"
    assert flap.normalized().fluctuation == "flap"
    assert PruneRequest(prune_method="flap", sparsity_type="structured", compensate="none").compensation == "none"
    nr = PruneRequest(prune_method="neuronrank_old", sparsity_type="structured")
    assert nr.structured_scope == "layer" and nr.compensation == "none"
    assert PruneRequest(prune_method="neuronrank_old", sparsity_type="structured", compensate="mean").needs_down_moments
    owl = PruneRequest(prune_method="wanda", layer_sparsity="owl")
    assert owl.tie_rule == "upstream" and (owl.owl_m, owl.owl_lam) == (5.0, 0.08)
    assert (owl.normalized().owl_threshold, owl.normalized().owl_lambda) == (5.0, 0.08)
    assert PruneRequest(prune_method="wanda").normalized().owl_lambda is None
    # OWL's ratios come from one-pass statistics also for a method calibrated layer by layer
    assert PruneRequest(prune_method="ria", layer_sparsity="owl").needs_statistics
    assert not PruneRequest(prune_method="ria").needs_statistics
