"""The URL's new controls, checked before use: a bad value is a short notice (UserError), never a reset."""

import pytest

from neuronrank import UserError
from neuronrank.views.display import url_text, url_value


def test_flags_choices_sweeps_and_run_lists_read_back_what_url_text_writes():
    assert url_value("present", "1") is True and url_value("present", "0") is False
    assert url_value("cmp_log", url_text(False)) is False
    assert url_value("cmp_type", "2:4") == "2:4" and url_value("cmp_type", "all") == "all"
    assert url_value("sweep", "sweep-0a1b2c3d") == "sweep-0a1b2c3d"
    assert url_value("cmp_runs", url_text([3, 12])) == [3, 12]
    assert url_value("cmp_runs", "12, 3,3") == [3, 12]


@pytest.mark.parametrize("name, raw", [("present", "yes"), ("cmp_type", "3:4"), ("cmp_type", "<b>x</b>"),
                                       ("sweep", "sweep-../../x"), ("cmp_runs", "1,a"),
                                       ("cmp_runs", ",".join(str(i) for i in range(1, 60))),
                                       ("cmp_runs", "99999999999999999999999")])
def test_bad_values_are_a_short_notice(name, raw):
    with pytest.raises(UserError) as e:
        url_value(name, raw)
    text = str(e.value)
    assert text.startswith(f"The link's {name}=") and text.endswith("it was ignored.") and len(text) < 160
