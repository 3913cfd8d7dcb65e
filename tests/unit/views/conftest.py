"""Fixtures of the views' tests: a synthetic stats table of the contract's shape and its arrays."""

import numpy as np
import pandas as pd
import pytest

from neuronrank.views import explorer


def synthetic_frame(n_layers=3, width=40, seed=0, dead_per_layer=2) -> pd.DataFrame:
    """A stats table of the contract's shape with random values (and some dead neurons)."""
    rng = np.random.default_rng(seed)
    n = n_layers * width
    tokens = 64
    n_active = rng.integers(1, tokens, n)
    for layer in range(n_layers):
        n_active[layer * width: layer * width + dead_per_layer] = 0
    tf = rng.lognormal(-2, 1, n)
    tf[n_active == 0] = 0.0
    return pd.DataFrame({
        "layer": np.repeat(np.arange(n_layers, dtype=np.int32), width),
        "neuron": np.tile(np.arange(width, dtype=np.int32), n_layers),
        "tf": tf,
        "idf": np.log((tokens + 1) / (n_active + 1)) + 1,
        "n_active": n_active,
        "tokens": np.full(n, tokens),
        "w_norm": rng.lognormal(0.3, 0.2, n),
        "down_abs_mean": rng.uniform(0.01, 0.1, n),
        "x_norm_down": rng.uniform(0.5, 5, n),
    })


@pytest.fixture
def frame():
    return synthetic_frame()


@pytest.fixture
def arrays(frame):
    return explorer.neuron_arrays(frame)
