"""Our RIA against RIA's own code, side by side: are the masks the same?

Runs `lib/prune.py::prune_ria` of a checkout of biomedical-cybernetics/Relative-importance-and-activation-pruning
(not part of this project: `git clone https://github.com/biomedical-cybernetics/Relative-importance-and-activation-pruning`)
with its defaults (a = 0.5, one threshold per matrix, sequential, every linear of each decoder layer; no
channel reallocation, no LSA), and `neuronrank prune --prune_method ria --targets all` (its own setup: layer by
layer, per matrix with RIA's `<=` rule) on the same model and windows, CPU float32; prints RESULT lines with
the number of weights the masks differ in (goal: at most 0.01 %).

Adapters (run time only, parity/originals.py): our windows for its get_loaders, rotary embeddings per layer,
model.seqlen / hf_device_map, Tensor.cuda = identity; `args.model` contains "llama" (RIA picks its Llama code
path by that name).

Usage: python parity/ria_original_masks.py --original PATH [--type unstructured|2:4|4:8] [--per-outneuron]
       [--nsamples 8 --seqlen 128 --calib news --model smollm2-135m]
"""

import argparse
import json

import torch

import originals
from neuronrank.config.requests import PruneRequest
from neuronrank.prune import prune


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--original", required=True, help="a checkout of RIA's repository")
    ap.add_argument("--type", default="unstructured", choices=("unstructured", "2:4", "4:8"))
    ap.add_argument("--per-outneuron", action="store_true", help="RIA's per-row option (ours: --group row)")
    originals.add_run_args(ap)
    args = ap.parse_args()
    root = originals.checkout(args.original, "lib/prune.py", "RIA")
    torch.set_num_threads(args.threads)
    ratio = 0.5

    model, tok, windows = originals.load(args.model, args.calib, args.nsamples, args.seqlen)
    req = PruneRequest(model=args.model, prune_method="ria", sparsity_type=args.type, sparsity_ratio=ratio,
                       targets="all", group="row" if args.per_outneuron else None, nsamples=args.nsamples,
                       seqlen=args.seqlen, calib=args.calib)
    with originals.Timer() as t_ours:
        prune(model, req, None, windows=windows)
    ours = originals.masks(model)
    del model

    ria = originals.import_original(root, "lib.prune")
    model, tok = originals.load_model(args.model)
    originals.adapt(model, args.seqlen)
    ria.get_loaders = originals.loaders(windows)

    class Args:  # RIA main.py's defaults, except what the command line names
        model = f"llama/{args.model}"
        seed, calib_dataset, nsamples, seqlen = 0, "c4", args.nsamples, args.seqlen
        sparsity_ratio, sparsity_type, prune_method = ratio, args.type, "ria"
        a = 0.5
        reconstruction = reallocation = lsa = gptq = fast = semi_sparse_acc = False
        importance_score = "sum"
        per_outneuron = args.per_outneuron

    n, m = (0, 0) if args.type == "unstructured" else map(int, args.type.split(":"))
    with originals.Timer() as t_orig:
        ria.prune_ria(Args, model, tok, torch.device("cpu"), prune_n=n, prune_m=m)
    cmp = originals.compare_masks(ours, originals.masks(model))
    tag = f"ria_{args.type.replace(':', 'of')}" + ("_row" if args.per_outneuron else "")
    originals.mask_results(tag, cmp)
    print(json.dumps({"windows": f"{args.nsamples} x {args.seqlen} ({args.calib})", **cmp,
                      "seconds": {"ours": round(t_ours.s, 1), "original": round(t_orig.s, 1)}}))


if __name__ == "__main__":
    main()
