"""Our OWL layer sparsity against OWL's own code, side by side: the same outlier ratios, layer ratios and
masks?

Runs `lib/prune_all.py::prune_wanda_outlier` (or `prune_mag_outlier` with --method magnitude) of a checkout
of luuyin/OWL (not part of this project: `git clone https://github.com/luuyin/OWL`) with its README's
settings (M = 5, λ = 0.08, unstructured, every linear of each decoder layer, Wanda sequentially), and
`neuronrank prune --prune_method wanda --layer-sparsity owl --calibration sequential --targets all` on the same
model and windows, CPU float32. Prints RESULT lines: the largest difference of the outlier ratios D_l and of
the layer keep ratios, how many layer ratios are bit-equal, and how many weights the masks differ in (goal:
at most 0.01 %).

Adapters (run time only, parity/originals.py): our windows for its get_loaders, rotary embeddings per layer,
model.seqlen / hf_device_map, Tensor.cuda = identity. To read its two local results without touching its
source, its `check_outlier_mean` is wrapped (the return value is D_l) and its module's `np` is a proxy whose
`mean` remembers its argument (its last np.mean call, in a print, receives the final keep ratios).

Usage: python parity/owl_original_ratios.py --original PATH [--ratio 0.5] [--method wanda|magnitude]
       [--nsamples 8 --seqlen 128 --calib news --model smollm2-135m]
"""

import argparse
import json

import numpy
import torch

import originals
from neuronrank.config.requests import PruneRequest
from neuronrank.engine.collect import batched, collect
from neuronrank.prune import prune


class _NumpyProxy:
    def __init__(self):
        self.mean_args = []

    def __getattr__(self, name):
        return getattr(numpy, name)

    def mean(self, x, *a, **k):
        self.mean_args.append(numpy.array(x, copy=True))
        return numpy.mean(x, *a, **k)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--original", required=True, help="a checkout of luuyin/OWL")
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--method", default="wanda", choices=("wanda", "magnitude"))
    originals.add_run_args(ap)
    args = ap.parse_args()
    root = originals.checkout(args.original, "lib/prune_all.py", "OWL")
    torch.set_num_threads(args.threads)
    m_, lam = 5.0, 0.08

    model, tok, windows = originals.load(args.model, args.calib, args.nsamples, args.seqlen)
    req = PruneRequest(model=args.model, prune_method=args.method, sparsity_ratio=args.ratio, targets="all",
                       layer_sparsity="owl", owl_threshold=m_, owl_lambda=lam, nsamples=args.nsamples,
                       seqlen=args.seqlen, calib=args.calib,
                       calibration="sequential" if args.method == "wanda" else None)
    with originals.Timer() as t_ours:
        stats = collect(model, batched(windows, 8))  # the dense one-pass statistics (batches of the default 8)
        info = prune(model, req, stats, windows=windows)
    ours = originals.masks(model)
    keep_ours = numpy.array(info["owl"]["keep"])
    del model

    owl = originals.import_original(root, "lib.prune_all")
    model, tok = originals.load_model(args.model)
    originals.adapt(model, args.seqlen)
    owl.get_loaders = originals.loaders(windows)
    proxy = _NumpyProxy()
    owl.np = proxy
    d_orig, wrapped = [], owl.check_outlier_mean

    def check_outlier_mean(mask, threshold):
        d = wrapped(mask, threshold)
        d_orig.append(d)
        return d
    owl.check_outlier_mean = check_outlier_mean

    class Args:  # OWL's main.py arguments as its README runs them
        model = args.model
        seed, nsamples, sparsity_ratio, sparsity_type = 0, args.nsamples, args.ratio, "unstructured"
        prune_method, use_variant = f"{args.method}_owl", False
        Hyper_m, Lamda = m_, lam

    fn = owl.prune_wanda_outlier if args.method == "wanda" else owl.prune_mag_outlier
    with originals.Timer() as t_orig:
        fn(Args, model, tok, torch.device("cpu"), prune_n=0, prune_m=0)
    keep_orig = proxy.mean_args[-1]
    cmp = originals.compare_masks(ours, originals.masks(model))
    d_ours = numpy.array(info["owl"]["outlier_percent"])
    tag = f"owl_{args.method}_{args.ratio:g}"
    originals.result(f"{tag}_outlier_ratio_max_abs_diff", f"{numpy.abs(d_ours - numpy.array(d_orig)).max():.3g}",
                     note="D_l in %")
    originals.result(f"{tag}_layer_ratio_max_abs_diff", f"{numpy.abs(keep_ours - keep_orig).max():.3g}",
                     note=f"keep ratios {keep_orig.min():.4f}-{keep_orig.max():.4f}")
    originals.result(f"{tag}_layer_ratios_bit_equal", f"{int((keep_ours == keep_orig).sum())}/{len(keep_orig)}")
    originals.mask_results(tag, cmp)
    print(json.dumps({"windows": f"{args.nsamples} x {args.seqlen} ({args.calib})", **cmp,
                      "seconds": {"ours": round(t_ours.s, 1), "original": round(t_orig.s, 1)}}))


if __name__ == "__main__":
    main()
