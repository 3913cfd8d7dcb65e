"""The model side (torch): loading a model and its uniform gated-MLP view, token windows as the model's
input, the statistics pass (hooks, kernels, collect), statistics of a request through the cache, the
sharded pass under torchrun."""
