"""Our FLAP against FLAP's own code, side by side, for the MLP: the same pruned neurons and the same bias?

Runs `lib/prune.py::prune_flap` of a checkout of CASIA-IVA-Lab/FLAP (not part of this project:
`git clone https://github.com/CASIA-IVA-Lab/FLAP`) with its scripts' defaults (WIFV, AL-AM, --unstr, bias
compensation) restricted to the MLP, and `neuronrank prune --prune_method flap --sparsity_type structured` (its
own setup: FLAP's fluctuation, standardised per layer, one ranking across the layers, mean compensation) on
the same model and windows, CPU float32. Prints RESULT lines: neuron flags that differ, neurons kept by each,
and the largest difference of the down_proj bias.

FLAP ranks attention heads and MLP neurons together; its head code hard-codes head_dim 128 and one head mask
for q/k/v (no grouped-query attention), which the embedded model (head_dim 64, 9 query / 3 KV heads) cannot
run, and this project prunes MLP neurons only. So its source is patched IN MEMORY for the MLP alone (the
file on disk is unchanged; each anchor must match exactly once, else the script stops):
  P1 prune_flap      no statistics of self_attn.o_proj
  P2                 the attention ranking is an empty [layers, 0] tensor (only neurons are ranked)
  P3                 no attention compress() call
Run-time adapters besides parity/originals.py's: down_proj gets a zero bias Parameter just before compress()
(FLAP's own modeling_llama.py builds it with bias=True; transformers 5 Llama has mlp_bias=False), and the
float16 mean FLAP hands to compress() is cast to float32 for the bias product (FLAP ran float16 models, where
the dtypes agreed; the float16 rounding of the mean is kept).

Usage: python parity/flap_original_neurons.py --original PATH [--ratio 0.2] [--fluctuation flap|variance]
       [--nsamples 8 --seqlen 128 --calib news --model smollm2-135m]
"""

import argparse
import json
import sys
import types

import numpy as np
import torch

import originals
from neuronrank.config.requests import PruneRequest
from neuronrank.engine.collect import batched, collect
from neuronrank.engine.models import mlp_blocks
from neuronrank.prune import prune

_BODY = ("        subset.update({'mlp.down_proj': find_layers(layer)['mlp.down_proj']})\n\n"
         "        if f\"model.layers.{i}\" in getattr(model, 'hf_device_map', {}):")
PATCHES = [  # (anchor, replacement): the anchor must occur exactly once in lib/prune.py
    ("        subset.update({'self_attn.o_proj': find_layers(layer)['self_attn.o_proj']})\n" + _BODY
     + "   ## handle the case for llama-30B and llama-65B, when the device map has multiple GPUs;\n"
       "            dev = model.hf_device_map[f\"model.layers.{i}\"]\n"
       "            inps, outs, attention_mask, position_ids = inps.to(dev), outs.to(dev), attention_mask.to(dev), "
       "position_ids.to(dev)\n\n"
       "        wrapped_layers = {}\n"
       "        for name in subset:\n"
       "                wrapped_layers[name] = BiasGPT(", "P1"),
    ("        attn_metric = torch.stack(attn_metric_list)\n"
     "        attn_metric = standarlization(attn_metric)\n"
     "        attn_metric = attn_metric.reshape(len(layers), -1, 128).mean(dim=2)\n",
     "        attn_metric = torch.zeros(len(layers), 0)\n"),
    ("        else:\n"
     "            compress(model.model.layers[idx], attn_mask[idx], None, attn_baseline_inp_list[idx], None, device, "
     "unstr=args.unstr)\n",
     "        else:\n            pass\n"),
]


def patched_prune_module(root):
    path = root / "lib" / "prune.py"
    src = path.read_text()
    for anchor, new in PATCHES:
        if src.count(anchor) != 1:
            sys.exit(f"error: {path}: a patch anchor does not occur exactly once ({anchor.strip()[:60]!r}...); "
                     "this script knows FLAP at 3bb57db")
        src = src.replace(anchor, anchor.split("\n", 1)[1] if new == "P1" else new)
    originals.import_original(root, "lib.layerwrapper")  # lib/ importable: its relative imports resolve
    mod = types.ModuleType("lib.prune")
    mod.__file__, mod.__package__ = str(path), "lib"
    exec(compile(src, f"{path} (patched in memory for the MLP only)", "exec"), mod.__dict__)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--original", required=True, help="a checkout of CASIA-IVA-Lab/FLAP")
    ap.add_argument("--ratio", type=float, default=0.2)
    originals.add_run_args(ap)
    ap.add_argument("--fluctuation", default="flap", choices=("flap", "variance"),
                    help="ours with FLAP's estimator (the default) or the textbook variance, to see what it changes")
    args = ap.parse_args()
    root = originals.checkout(args.original, "lib/prune.py", "FLAP")
    torch.set_num_threads(args.threads)

    model, tok, windows = originals.load(args.model, args.calib, args.nsamples, args.seqlen)
    req = PruneRequest(model=args.model, prune_method="flap", sparsity_type="structured", sparsity_ratio=args.ratio,
                       nsamples=args.nsamples, seqlen=args.seqlen, calib=args.calib, fluctuation=args.fluctuation)
    with originals.Timer() as t_ours:
        stats = collect(model, batched(windows, 8))  # the one-pass statistics (batches of the default 8)
        info = prune(model, req, stats)
    width = mlp_blocks(model)[0].width
    keep_ours = np.ones((len(mlp_blocks(model)), width), dtype=bool)
    for layer, dropped in info["dropped"].items():
        keep_ours[layer, dropped] = False
    bias_ours = torch.stack([b.down.bias.detach().clone() for b in mlp_blocks(model)])
    del model

    flap = patched_prune_module(root)
    model, tok = originals.load_model(args.model)
    originals.adapt(model, args.seqlen)
    flap.get_loaders = originals.loaders(windows)
    kept, wrapped = [], flap.compress

    def compress(layer, attn_mask, mlp_mask, attn_mean_inp, mlp_mean_inp, device, bias=True, unstr=False):
        kept.append(mlp_mask.clone())
        if bias:
            mlp_mean_inp = mlp_mean_inp.to(layer.mlp.down_proj.weight.dtype)  # float16 mean, float32 model
            if layer.mlp.down_proj.bias is None:  # FLAP's Llama has this bias
                layer.mlp.down_proj.bias = torch.nn.Parameter(
                    torch.zeros(layer.mlp.down_proj.out_features, dtype=layer.mlp.down_proj.weight.dtype))
        return wrapped(layer, attn_mask, mlp_mask, attn_mean_inp, mlp_mean_inp, device, bias=bias, unstr=unstr)
    flap.compress = compress

    class Args:  # FLAP's scripts/llama_7b.sh: flap, remove_heads -1, WIFV, AL-AM, --unstr
        seed, nsamples, pruning_ratio, remove_heads = 0, args.nsamples, args.ratio, -1
        metrics, structure, prune_method, unstr = "WIFV", "AL-AM", "flap", True

    with originals.Timer() as t_orig:
        flap.prune_flap(Args, model, tok, torch.device("cpu"))
    keep_orig = torch.stack(kept).numpy()
    bias_orig = torch.stack([ly.mlp.down_proj.bias.detach() for ly in model.model.layers])
    differ = int((keep_ours != keep_orig).sum())
    sets_equal = sum(bool((keep_ours[i] == keep_orig[i]).all()) for i in range(len(keep_orig)))
    tag = f"flap_{args.ratio:g}" + ("" if args.fluctuation == "flap" else f"_{args.fluctuation}")
    originals.result(f"{tag}_neuron_flags_differ", differ, "==0", f"of {keep_orig.size:,} MLP neurons")
    originals.result(f"{tag}_layers_with_equal_neuron_sets", f"{sets_equal}/{len(keep_orig)}")
    originals.result(f"{tag}_neurons_kept", f"{int(keep_ours.sum())}/{int(keep_orig.sum())}", note="ours/original")
    originals.result(f"{tag}_bias_max_abs_diff", f"{float((bias_ours - bias_orig).abs().max()):.3g}",
                     note=f"largest |bias| {float(bias_orig.abs().max()):.3g}")
    print(json.dumps({"windows": f"{args.nsamples} x {args.seqlen} ({args.calib})", "neurons_differ": differ,
                      "kept_per_layer": keep_orig.sum(1).tolist(),
                      "seconds": {"ours": round(t_ours.s, 1), "original": round(t_orig.s, 1)}}))


if __name__ == "__main__":
    main()
