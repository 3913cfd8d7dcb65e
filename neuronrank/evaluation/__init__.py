"""How good a model is (torch): perplexity (and the dense result's cache), zero-shot accuracy."""
