"""Our sequential Wanda against upstream Wanda's own code, side by side: are the masks the same?

Runs locuslab/wanda's `lib/prune.py::prune_wanda` unmodified from a checkout you give (it is not part
of this project: `git clone https://github.com/locuslab/wanda`), and `neuronrank prune --prune_method
wanda --targets all --calibration sequential` (per-row groups, Wanda's own), on the same model and the same
calibration windows, CPU float32 by default; prints how many weights the two masks differ in, per
module kind and per layer, and the time each took.

Adapters, at run time only: upstream's `get_loaders` is given our windows; each decoder layer gets its
rotary position embeddings when the caller passes none (transformers 5 layers need them; upstream was
written for 4.3x, whose layers computed them); `model.seqlen` and `model.hf_device_map` are set as
upstream's main.py does.

Usage: python parity/wanda_upstream_masks.py --upstream /path/to/wanda [--type unstructured|2:4|4:8]
       [--nsamples 32 --seqlen 256 --calib news --model smollm2-135m]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from originals import add_rope  # parity/originals.py: the run-time adapters every parity script shares
from neuronrank.config.requests import PruneRequest, StatsRequest
from neuronrank.engine import models
from neuronrank.engine.statistics import calibration_windows
from neuronrank.prune import prune


def masks(model) -> dict[str, torch.Tensor]:
    return {n: (m.weight == 0).clone() for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and ".layers." in n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True, help="a checkout of github.com/locuslab/wanda")
    ap.add_argument("--type", default="unstructured", choices=("unstructured", "2:4", "4:8"))
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--calib", default="news")
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if not (Path(args.upstream) / "lib" / "prune.py").is_file():
        sys.exit(f"error: {args.upstream} is not a checkout of locuslab/wanda (no lib/prune.py)")
    torch.set_num_threads(args.threads)

    model, tok = models.load(args.model, "cpu", "float32")
    windows = calibration_windows(StatsRequest(model=args.model, calib=args.calib, nsamples=args.nsamples,
                                                        seqlen=args.seqlen), model, tok)
    req = PruneRequest(model=args.model, prune_method="wanda", sparsity_type=args.type, sparsity_ratio=0.5,
                       targets="all", calibration="sequential", nsamples=args.nsamples, seqlen=args.seqlen,
                       calib=args.calib)
    t0 = time.perf_counter()
    prune(model, req, None, windows=windows)
    t_ours = time.perf_counter() - t0
    ours = masks(model)
    del model

    sys.path.insert(0, str(Path(args.upstream).resolve()))
    import lib.prune as upstream  # noqa: E402  (the checkout's own code, unmodified)

    model, tok = models.load(args.model, "cpu", "float32")
    model.seqlen, model.hf_device_map = args.seqlen, {}
    add_rope(model)
    upstream.get_loaders = lambda *a, **k: ([(w[None], None) for w in windows], None)

    class Args:
        nsamples, seed, sparsity_ratio, use_variant = args.nsamples, 0, 0.5, False

    n, m = (0, 0) if args.type == "unstructured" else map(int, args.type.split(":"))
    t0 = time.perf_counter()
    upstream.prune_wanda(Args, model, tok, torch.device("cpu"), prune_n=n, prune_m=m)
    t_up = time.perf_counter() - t0
    theirs = masks(model)

    kinds, layers = {}, {}
    for name in ours:
        d, total = int((ours[name] != theirs[name]).sum()), ours[name].numel()
        for table, key in ((kinds, name.rsplit(".", 1)[1]), (layers, int(name.split(".layers.")[1].split(".")[0]))):
            a, b = table.get(key, (0, 0))
            table[key] = (a + d, b + total)
    differ, total = sum(d for d, _ in kinds.values()), sum(t for _, t in kinds.values())
    print(json.dumps({
        "type": args.type, "model": args.model, "windows": f"{args.nsamples} x {args.seqlen} ({args.calib})",
        "weights": total, "differ": differ, "fraction": differ / total,
        "per_kind": {k: d for k, (d, _) in kinds.items()},
        "first_layer_that_differs": next((k for k, (d, _) in sorted(layers.items()) if d), None),
        "seconds": {"ours": round(t_ours, 1), "upstream": round(t_up, 1)},
    }, indent=1))


if __name__ == "__main__":
    main()
