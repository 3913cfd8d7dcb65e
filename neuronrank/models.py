"""Loading a model and its uniform gated-MLP view, as the README's example names them
(`neuronrank.models.load`): a face over engine/models.py. Nothing inside the package imports it."""

from neuronrank.engine.models import GatedMLP, decoder_layers, load, load_tokenizer, mlp_blocks, resolve_device, \
    resolve_dtype

__all__ = ["GatedMLP", "decoder_layers", "load", "load_tokenizer", "mlp_blocks", "resolve_device", "resolve_dtype"]
