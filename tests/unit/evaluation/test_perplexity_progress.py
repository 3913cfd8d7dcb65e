"""Perplexity reports its progress inside a batch (per decoder layer), and the number stays the same."""

import torch

from neuronrank.evaluation.perplexity import perplexity
from tests.conftest import make_tiny


def test_progress_moves_within_a_batch_and_changes_nothing():
    model = make_tiny(layers=4)
    windows = torch.randint(0, 96, (6, 16), generator=torch.Generator().manual_seed(3))
    plain = perplexity(model, windows, batch_size=3)
    seen = []
    res = perplexity(model, windows, batch_size=3, progress=lambda done, total: seen.append((done, total)))
    assert res.ppl == plain.ppl and res.nll == plain.nll
    total = 6 * 16
    assert all(t == total for _, t in seen) and seen[-1][0] == total
    done = [d for d, _ in seen]
    assert done == sorted(done) and len(set(done)) == len(done)  # never backwards, no repeats
    # 2 batches × 4 layers: the first batch reports after layers 1-3 and at its end (not one jump to half)
    first_batch = [d for d in done if d <= 3 * 16]
    assert first_batch == [12, 24, 36, 48]
    assert not any(h for h in model.model.layers[0]._forward_hooks.values())  # hooks removed
