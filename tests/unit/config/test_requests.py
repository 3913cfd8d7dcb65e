"""neuronrank.config.requests: the fields' declarations, and errors in the app's words."""

import pytest

from neuronrank import UserError
from neuronrank.config.requests import PruneRequest, StatsRequest, app_message


def app_words(req, **kw) -> str:
    """The message the app shows for `req`'s validation error."""
    with pytest.raises(UserError) as e:
        req.validate(**kw)
    return app_message(e.value)


def test_app_words_replace_cli_flags():
    """The app names a field's widget by the field's declared label; the CLI's words stay the CLI's."""
    assert app_words(PruneRequest(sparsity_type="2:4", sparsity_ratio=0.3)) == \
        "2:4 prunes 2 of every 4 weights: set the sparsity ratio to 50%"
    assert app_words(PruneRequest(pruning_last=40), n_layers=30) == \
        "'Prune only the last N layers' is 40, but the model has 30 layers"
    assert "sparsity_ratio" not in app_words(PruneRequest(sparsity_ratio=1.0))
    # the CLI's messages are unchanged, and every field the pages draw has a label to be named by
    with pytest.raises(UserError, match=r"^pruning_last 40 exceeds the model's 30 layers$"):
        PruneRequest(pruning_last=40).validate(30)
    assert app_words(PruneRequest(pruning_last=0)) == "'Prune only the last N layers' must be at least 1 (got 0)"
    assert app_words(StatsRequest(nsamples=0)) == "'nsamples' must be at least 1 (got 0)"
    assert app_words(PruneRequest(eval="wikki")).startswith("Evaluation text: 'wikki' is not a text source")
    assert app_words(PruneRequest(targets="all")).startswith("Pruning attention too is not defined for neuronrank_old")
