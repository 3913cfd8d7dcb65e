"""The ablation view: the result's rows as the page charts them, the protocol sentence, the cost."""

import pandas as pd
import pytest

from neuronrank.config.requests import AblateRequest
from neuronrank.views import ablation

RESULT = {
    "dense_ppl": 12.941, "eval": {"source": "wiki", "seqlen": 512, "windows": 16, "tokens": 8176},
    "classes": [
        {"class": "critical", "layers": "0-29", "neurons": 760, "ppl": 26306.5, "delta_ppl": 26293.6,
         "random_ppl": [14.1, 13.8, 13.9], "random_mean": 13.93, "random_std": 0.17},
        {"class": "dead", "layers": "20-29", "neurons": 0, "ppl": 12.941, "delta_ppl": 0.0, "random_ppl": [],
         "random_mean": None, "random_std": None},
        {"class": "important", "layers": "0-29", "neurons": 3844, "ppl": None, "delta_ppl": None,
         "random_ppl": [22.8], "random_mean": 22.8, "random_std": None}],
    "neurons": [{"layer": 3, "neuron": 17, "ppl": 13.0, "delta_ppl": 0.059}],
    "roles": {"quantile": 0.9, "tf_threshold": None, "idf_threshold": None, "dead_below": 0.001, "controls": 3,
              "seed": 0},
}


def test_class_table():
    t = ablation.class_table(RESULT)
    assert list(t.columns) == ablation.CLASS_COLUMNS and len(t) == 3
    assert t.loc[0, "ratio"] == pytest.approx(26306.5 / 13.93) and t.loc[0, "controls"] == 3
    assert pd.isna(t.loc[1, "ratio"]) and t.loc[1, "controls"] == 0
    assert pd.isna(t.loc[2, "ratio"])  # a diverged class (null) has no ratio
    assert ablation.neuron_table(RESULT).to_dict("records") == [RESULT["neurons"][0]]


def test_protocol_and_cost():
    text = ablation.protocol_text(RESULT)
    assert "wiki, seqlen 512, 16 windows (8,176 predicted tokens); dense 12.941" in text
    assert "0.9 quantile" in text and "0.1%" in text and "3 random sets" in text
    glob = {**RESULT, "roles": {**RESULT["roles"], "quantile": None, "tf_threshold": 0.2, "idf_threshold": 3.5}}
    assert "TF above 0.2, IDF above 3.5" in ablation.protocol_text(glob)
    assert ablation.cost_text(AblateRequest(classes="critical,dead", controls=2)).startswith("6 perplexity evaluations")
    assert ablation.cost_text(AblateRequest(classes="none", neurons="1:2", controls=2)).startswith(
        "1 perplexity evaluation (")
