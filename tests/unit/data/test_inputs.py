"""neuronrank.data.inputs: what a request names on disk is checked before anything is queued or loaded."""

from pathlib import Path

import pytest

from neuronrank import UserError
from neuronrank.config import requests
from neuronrank.data import specs
from neuronrank.data.inputs import check_inputs


def test_tokenizer_source_and_param_checks(tiny_dir, text_file):
    def check_stats_params(params):
        req = requests.StatsRequest(**params)
        req.validate()
        check_inputs(req)

    assert specs.tokenizer_source(str(tiny_dir)) == (str(Path(tiny_dir).resolve()), {})
    good = dict(model=str(tiny_dir), calib=f"file:{text_file}", nsamples=4, seqlen=16, seed=0, site="gate")
    check_stats_params(good)
    for bad, msg in [({"seqlen": 1}, "seqlen"), ({"site": "up"}, "activation site"),
                     ({"calib": "file:/no/such.txt"}, "not found"), ({"calib": "file:"}, "enter the path"), ({"calib": "books"}, "unknown text source"),
                     ({"model": "/no/such/model"}, "not found")]:
        with pytest.raises(UserError, match=msg):
            check_stats_params({**good, **bad})
