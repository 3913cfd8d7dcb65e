"""The two windowing protocols: seeded calibration windows, consecutive evaluation windows (Wanda's)."""

import numpy as np
import pytest

from neuronrank import UserError
from neuronrank.engine.windows import calibration_windows, evaluation_windows


def test_calibration_windows_are_seeded_and_inside_the_stream():
    ids = np.arange(1000, dtype=np.int32)
    a = calibration_windows(ids, 5, 64, seed=3)
    b = calibration_windows(ids, 5, 64, seed=3)
    c = calibration_windows(ids, 5, 64, seed=4)
    assert a.shape == (5, 64) and a.dtype.is_floating_point is False
    assert (a == b).all() and not (a == c).all()
    # each window is a contiguous run of the stream
    assert ((a[:, 1:] - a[:, :-1]) == 1).all() and int(a.max()) < 1000


def test_evaluation_windows_follow_the_wanda_protocol():
    ids = np.arange(1000, dtype=np.int32)
    w = evaluation_windows(ids, 300)
    assert w.shape == (3, 300) and int(w[0, 0]) == 0 and int(w[2, -1]) == 899  # tail of 100 dropped
    assert evaluation_windows(ids, 300, max_windows=2).shape == (2, 300)
    with pytest.raises(UserError, match="text too short"):
        evaluation_windows(ids[:10], 300)
    with pytest.raises(UserError, match="text too short"):
        calibration_windows(ids[:10], 1, 300)
    with pytest.raises(UserError, match="seqlen must be at least 2"):
        calibration_windows(ids, 1, 1)
    with pytest.raises(UserError, match="nsamples must be at least 1"):
        calibration_windows(ids, 0, 8)
