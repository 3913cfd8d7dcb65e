"""The neuron drill-down: promoted / suppressed tokens, numpy from the safetensors files, against torch."""

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from neuronrank.views import unembed


def test_neuron_tokens_equal_the_unembedding_of_the_down_column(tiny_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    u = unembed.load(str(tiny_dir))
    for layer, neuron in ((0, 0), (1, 17)):
        with torch.no_grad():
            col = model.model.layers[layer].mlp.down_proj.weight[:, neuron]
            v = (model.lm_head.weight @ (model.model.norm.weight * col)).numpy()
        np.testing.assert_allclose(u.direct_effect(layer, neuron), v, rtol=1e-5, atol=1e-6)
        got = u.neuron_tokens(layer, neuron, k=5)
        assert [i for i, _ in got["promoted"]] == list(np.argsort(-v, kind="stable")[:5])
        assert [i for i, _ in got["suppressed"]] == list(np.argsort(v, kind="stable")[:5])

