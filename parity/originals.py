"""What every side-by-side check needs to run an original pruning repository's own code on this project's
model and windows, changing none of its arithmetic (run-time adapters only; the checkout stays outside the
repository and unmodified on disk):

- its data loader (`get_loaders`) returns our calibration windows as its (input, target) list;
- each decoder layer gets its rotary position embeddings when the caller passes none (transformers 5
  layers need them; the originals were written for transformers 4.3x, whose layers computed them);
- `model.seqlen` and `model.hf_device_map` are set as their main.py / accelerate set them;
- `Tensor.cuda()` is the identity (they sort on the GPU, `torch.sort(x.cuda())[0][k].cpu()`; the sorted
  values are the same on the CPU), the device is the CPU and the model float32 (they load float16 on CUDA).

The three repositories each ship a package named `lib`: import one per process (`import_original`).
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

import torch

from neuronrank.config.requests import StatsRequest
from neuronrank.engine import models
from neuronrank.engine.statistics import calibration_windows

GOAL_FRACTION = 1e-4  # the agreement asked of masks: at most 0.01 % of the weights differ


def add_run_args(ap) -> None:
    """The flags every parity script shares: the model, the calibration windows, the CPU threads."""
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--calib", default="news")
    ap.add_argument("--nsamples", type=int, default=8)
    ap.add_argument("--seqlen", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)


def load(model_name: str, calib: str, nsamples: int, seqlen: int):
    """(model float32 on the CPU, tokenizer, windows [nsamples, seqlen]): the project's own windows."""
    model, tok = models.load(model_name, "cpu", "float32")
    windows = calibration_windows(StatsRequest(model=model_name, calib=calib, nsamples=nsamples, seqlen=seqlen),
                                  model, tok)
    return model, tok, windows


def load_model(model_name: str):
    """A fresh copy of the model (float32 on the CPU) for the original to prune."""
    return models.load(model_name, "cpu", "float32")


def add_rope(model) -> None:
    rot = model.model.rotary_emb

    def hook(module, args, kwargs):
        if kwargs.get("position_embeddings") is None:
            h = args[0] if args else kwargs["hidden_states"]
            pos = kwargs.get("position_ids")
            kwargs["position_embeddings"] = rot(h, torch.arange(h.shape[1])[None] if pos is None else pos)
        return args, kwargs

    for layer in model.model.layers:
        layer.register_forward_pre_hook(hook, with_kwargs=True)


def adapt(model, seqlen: int) -> None:
    model.seqlen, model.hf_device_map = seqlen, {}
    add_rope(model)
    torch.Tensor.cuda = lambda self, *a, **k: self


def loaders(windows):
    """A stand-in for the originals' get_loaders: our windows as their [(input, target)] list."""
    def get_loaders(*args, **kwargs):
        return [(w[None].clone(), None) for w in windows], None
    return get_loaders


def checkout(path: str, must_have: str, name: str) -> Path:
    root = Path(path).expanduser().resolve()
    if not (root / must_have).is_file():
        sys.exit(f"error: {path} is not a checkout of {name} (no {must_have})")
    return root


def import_original(root: Path, module: str):
    """The checkout's own module (its `lib` package), unmodified."""
    sys.path.insert(0, str(root))
    return importlib.import_module(module)


def masks(model) -> dict[str, torch.Tensor]:
    """{linear name: True where the weight is exactly 0} for every decoder-layer linear."""
    return {n: (m.weight == 0).clone() for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and ".layers." in n}


def compare_masks(ours: dict, theirs: dict) -> dict:
    """Differing weights in all, per module kind, and the first layer where they differ."""
    kinds, layers = {}, {}
    for name in ours:
        d = int((ours[name] != theirs[name]).sum())
        kinds[name.rsplit(".", 1)[1]] = kinds.get(name.rsplit(".", 1)[1], 0) + d
        layer = int(name.split(".layers.")[1].split(".")[0])
        layers[layer] = layers.get(layer, 0) + d
    total = sum(m.numel() for m in ours.values())
    differ = sum(kinds.values())
    return {"differ": differ, "weights": total, "fraction": differ / total, "per_kind": kinds,
            "first_layer": next((k for k, d in sorted(layers.items()) if d), None)}


def result(name: str, value, goal: str = "", note: str = "") -> None:
    print(f"RESULT {name} {value}" + (f" {goal}" if goal else "") + (f" ({note})" if note else ""), flush=True)


def mask_results(prefix: str, cmp: dict) -> None:
    result(f"{prefix}_weights_differ", cmp["differ"], f"<={int(GOAL_FRACTION * cmp['weights'])}",
           f"{cmp['fraction']:.6%} of {cmp['weights']:,}; first layer {cmp['first_layer']}")


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t0
