"""neuronrank.data.specs: a model spec resolves to its files (or one clear error), without loading anything."""

import pytest

from neuronrank import UserError
from neuronrank.data import specs


def test_spec_resolution_errors(tmp_path):
    with pytest.raises(UserError, match="model file not found"):
        specs.resolve(str(tmp_path / "x.gguf"))
    with pytest.raises(UserError, match="not a model"):
        specs.resolve(str(tmp_path))  # a directory without config.json
    (tmp_path / "weights.bin").write_bytes(b"123")
    with pytest.raises(UserError, match="not a model"):
        specs.resolve(str(tmp_path / "weights.bin"))
    with pytest.raises(UserError, match="model path not found"):
        specs.resolve("./no/such/dir")
    assert specs.resolve("smollm2-135m").kind == "alias"
    assert specs.resolve("someorg/somemodel").kind == "hub"
