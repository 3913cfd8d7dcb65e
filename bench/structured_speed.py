"""Does a pruned model run faster? Prefill and decode tokens/s and size on disk against the dense model,
on this machine, all models measured in one run (interleaved repetitions, the order rotating each time).

    structured NN %   whole MLP neurons removed and the model physically sliced (smaller matrices,
                      intermediate_size shrinks): what `prune --sparsity_type structured --save_model` writes
    unstructured 50 % the same shapes with half of the MLP weights zero: a dense matmul does the same work,
                      so on a CPU it runs at the dense speed (2:4 zeros likewise; only NVIDIA's sparse
                      tensor cores skip them: bench/gpu_check.sh)

The neurons are chosen by magnitude (‖gate row‖₂): every method slices to the same shapes, and speed
depends only on the shapes. Prefill: one forward over a window of --prefill tokens (no cache). Decode:
greedy generation of --new tokens after a --prompt token prompt with the KV cache, tokens/s of the new
tokens. Size: the safetensors files of save_pretrained.

Usage: python bench/structured_speed.py [--ratios 0.2,0.5 --reps 5 --prefill 512 --prompt 32 --new 64]
"""

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch

from neuronrank import corpora
from neuronrank.config.requests import PruneRequest
from neuronrank.engine import models
from neuronrank.prune import prune
from neuronrank.prune.structured import slice_structured


def disk_bytes(model) -> int:
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        return sum(p.stat().st_size for p in Path(d).glob("*.safetensors"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=models.DEFAULT_MODEL)
    ap.add_argument("--ratios", default="0.2,0.5", help="structured sparsity ratios")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--prefill", type=int, default=512, help="tokens of the prefill window")
    ap.add_argument("--prompt", type=int, default=32, help="prompt tokens before decoding")
    ap.add_argument("--new", type=int, default=64, help="tokens generated in the decode measurement")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    dense, tok = models.load(args.model, dtype="float32")
    n_layers = len(models.decoder_layers(dense))
    variants = {"dense": dense}
    for r in (float(x) for x in args.ratios.split(",")):
        m = copy.deepcopy(dense)
        info = prune(m, PruneRequest(model=args.model, prune_method="magnitude", sparsity_ratio=r,
                                     sparsity_type="structured"))
        slice_structured(m, {int(k): v for k, v in info["dropped"].items()})
        variants[f"structured {r:.0%}"] = m
    m = copy.deepcopy(dense)
    prune(m, PruneRequest(model=args.model, prune_method="magnitude", sparsity_ratio=0.5))
    variants["unstructured 50% (zeros)"] = m

    ids = torch.as_tensor(corpora.token_stream(tok, corpora.load_corpus("wiki")), dtype=torch.long)
    window = ids[None, : args.prefill]
    prompt = ids[None, args.prefill: args.prefill + args.prompt]
    pad = tok.eos_token_id if tok.eos_token_id is not None else 0

    @torch.inference_mode()
    def prefill(model):
        models.decoder_body(model)(input_ids=window, use_cache=False)

    @torch.inference_mode()
    def decode(model):
        out = model.generate(prompt, max_new_tokens=args.new, min_new_tokens=args.new, do_sample=False,
                             pad_token_id=pad)
        assert out.shape[1] == prompt.shape[1] + args.new

    times = {name: {"prefill": [], "decode": []} for name in variants}
    for model in variants.values():  # warm-up
        prefill(model)
        decode(model)
    names = list(variants)
    for rep in range(args.reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            for kind, fn in (("prefill", prefill), ("decode", decode)):
                t = time.perf_counter()
                fn(variants[name])
                times[name][kind].append(time.perf_counter() - t)

    sizes = {name: disk_bytes(m) for name, m in variants.items()}
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in variants.items()}
    print(f"model={args.model} fp32, {n_layers} layers, threads={torch.get_num_threads()}, reps={args.reps}; "
          f"prefill 1 x {args.prefill} tokens, decode {args.new} tokens after {args.prompt}")
    print(f"{'model':<26} {'intermediate':>12} {'params':>12} {'disk MB':>8} "
          f"{'prefill tok/s (median, min-max)':>34} {'decode tok/s (median, min-max)':>33}")
    rate = {}
    for name, m in variants.items():
        pre = [args.prefill / t for t in times[name]["prefill"]]
        dec = [args.new / t for t in times[name]["decode"]]
        rate[name] = (pre, dec)
        print(f"{name:<26} {m.config.intermediate_size:>12} {params[name]:>12,} {sizes[name] / 1e6:>8.1f} "
              f"{statistics.median(pre):>14,.0f} ({min(pre):,.0f}-{max(pre):,.0f})"
              f"{statistics.median(dec):>15,.1f} ({min(dec):,.1f}-{max(dec):,.1f})")
    for name in names[1:]:
        key = name.split(" (")[0].replace(" ", "_").replace("%", "")
        for i, kind in enumerate(("prefill", "decode")):
            # per repetition: this model's rate / the dense rate of the same repetition
            ratios = sorted(a / b for a, b in zip(rate[name][i], rate["dense"][i]))
            print(f"RESULT {kind}_speedup_{key} {statistics.median(ratios):.3f} "
                  f"(min {ratios[0]:.3f}, max {ratios[-1]:.3f}; {name} / dense tokens/s)")
        print(f"RESULT disk_ratio_{key} {sizes[name] / sizes['dense']:.3f} ({name} / dense bytes)")


if __name__ == "__main__":
    main()
