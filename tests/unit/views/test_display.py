"""neuronrank.views.display.url_value: every query parameter of the analysis pages, checked before use."""

import pytest

from neuronrank import UserError
from neuronrank.views.display import url_value


@pytest.mark.parametrize("name,raw,want", [
    ("layer", "12", 12), ("layer", " 0 ", 0), ("neuron", "11:1072", (11, 1072)), ("logx", "0", False),
    ("logx", "1", True), ("overlap", "global", "global"), ("overlap", "per-layer", "per-layer"),
    ("thresholds", "value", "value"), ("q", "0.9", 0.9), ("q", "0.50", 0.5), ("tf", "0.05280803516507149",
                                                                             0.05280803516507149),
    ("idf", "0", 0.0), ("split", "1", True), ("dead", "0", False), ("cells", "percent", "percent"), ("logtf", "0", False),
])
def test_good_values(name, raw, want):
    assert url_value(name, raw) == want


@pytest.mark.parametrize("name,raw", [
    ("layer", "-1"), ("layer", "1.5"), ("layer", "99999999"), ("neuron", "11/1072"), ("neuron", "11:"),
    ("neuron", "a:b"), ("logx", "yes"), ("overlap", "[x](https://example.com)"), ("q", "0.3"), ("q", "nan"),
    ("tf", "-0.1"), ("tf", "nan"), ("w", "1e400"), ("split", "true"), ("cells", "%"),
])
def test_bad_values_are_one_short_notice(name, raw):
    with pytest.raises(UserError) as e:
        url_value(name, raw)
    msg = str(e.value)
    assert msg.startswith(f"The link's {name}={raw[:40]}") and msg.endswith("it was ignored.") and "\n" not in msg
