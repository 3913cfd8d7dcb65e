"""Our one-pass Wanda vs the original layer-by-layer Wanda pipeline, same model, tokens and sparsity.

The reference (re-implemented here after Wanda's lib/prune.py): capture the inputs of decoder layer 0
for all calibration windows, then for each layer run every window through it with hooks gathering
‖X‖² (pass 1), prune that layer, and run every window through the pruned layer again (pass 2) to
produce the next layer's inputs. It stores inputs and outputs of all samples, and later layers see
already-pruned inputs. Ours: one forward pass with hooks over the dense model, then all layers pruned
from those norms.

Each approach runs in its own subprocess so peak memory (ru_maxrss) is its own; memory is reported
beyond the RSS right after the model is loaded. Prints time, peak memory, how far the MLP masks differ
and the perplexity each gives.
Usage: python bench/wanda_sequential.py [--nsamples 32 --seqlen 256 --ratio 0.5 --eval-windows 16]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _mem import PeakRSS


def _setup(args):
    from neuronrank import corpora
    from neuronrank.engine import models

    model, tok = models.load(args.model)
    ids = corpora.token_stream(tok, corpora.load_corpus("news"))
    windows = corpora.calibration_windows(ids, args.nsamples, args.seqlen, seed=0)
    return model, tok, windows


@torch.inference_mode()
def ours(model, windows, args):
    from neuronrank.prune import prune
    from neuronrank.config.requests import PruneRequest
    from neuronrank.engine.collect import batched, collect

    stats = collect(model, batched(windows, 8), site="gate")
    prune(model, PruneRequest(prune_method="wanda", sparsity_ratio=args.ratio, group="row"), stats)


@torch.inference_mode()
def sequential(model, windows, args):
    from neuronrank.engine.models import decoder_layers, mlp_blocks
    from neuronrank.prune.masks import lowest_mask

    layers = decoder_layers(model)
    captured = {}

    class Stop(Exception):
        pass

    def catch(module, a, kw):
        captured.setdefault("inps", []).append(a[0] if a else kw["hidden_states"])
        captured["kwargs"] = {k: v for k, v in kw.items() if k != "hidden_states"}
        raise Stop

    h = layers[0].register_forward_pre_hook(catch, with_kwargs=True)
    for w in windows:  # one sample at a time, as Wanda does
        try:
            model.get_decoder()(input_ids=w[None], use_cache=False)
        except Stop:
            pass
    h.remove()
    inps = torch.cat(captured["inps"])  # [N, S, H] stored for all samples
    outs = torch.zeros_like(inps)
    kwargs = captured["kwargs"]
    blocks = mlp_blocks(model)
    for i, layer in enumerate(layers):
        b = blocks[i]
        dev = b.gate.weight.device  # CPU or GPU alike
        sq = {"gate": torch.zeros(b.gate.in_features, dtype=torch.float64, device=dev),
              "down": torch.zeros(b.down.in_features, dtype=torch.float64, device=dev)}
        def gather(key):
            def hook(m, a):  # returns None: a pre-hook's return value would replace the input
                sq[key].add_(a[0].reshape(-1, a[0].shape[-1]).double().pow(2).sum(0))
            return hook

        hooks = [b.gate.register_forward_pre_hook(gather("gate")), b.down.register_forward_pre_hook(gather("down"))]
        for j in range(len(inps)):  # pass 1: gather input norms
            outs[j] = _out(layer(inps[j:j + 1], **kwargs))
        for hk in hooks:
            hk.remove()
        for lin, key in ((b.gate, "gate"), (b.up, "gate"), (b.down, "down")):
            metric = lin.weight.abs().float() * sq[key].sqrt().float()[None, :]
            lin.weight.masked_fill_(lowest_mask(metric, args.ratio, "unstructured", "row"), 0)
        for j in range(len(inps)):  # pass 2: outputs of the pruned layer feed the next one
            outs[j] = _out(layer(inps[j:j + 1], **kwargs))
        inps, outs = outs, inps


def _out(o):
    return o[0] if isinstance(o, tuple) else o


def worker(args) -> None:
    from neuronrank import corpora
    from neuronrank.evaluation import perplexity as evaluate
    from neuronrank.engine.models import mlp_blocks

    model, tok, windows = _setup(args)
    t = time.perf_counter()
    with PeakRSS() as mem:
        (ours if args.worker == "ours" else sequential)(model, windows, args)
    seconds = time.perf_counter() - t
    extra = mem.extra_mb
    masks = np.concatenate([(getattr(b, r).weight == 0).numpy().ravel() for b in mlp_blocks(model)
                            for r in ("gate", "up", "down")])
    np.save(args.mask_out, np.packbits(masks))
    ids = corpora.token_stream(tok, corpora.load_corpus("wiki"))
    ppl = evaluate.perplexity(model, corpora.evaluation_windows(ids, args.eval_seqlen, args.eval_windows)).ppl
    print(json.dumps({"seconds": seconds, "peak_extra_mb": extra, "ppl": ppl}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--eval-seqlen", type=int, default=512)
    ap.add_argument("--eval-windows", type=int, default=16)
    ap.add_argument("--worker", choices=["ours", "sequential"])
    ap.add_argument("--mask-out")
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    tmp = Path("/tmp")
    res = {}
    for name in ("ours", "sequential"):
        cmd = [sys.executable, __file__, "--worker", name, "--mask-out", str(tmp / f"mask_{name}.npy"),
               "--model", args.model, "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen),
               "--ratio", str(args.ratio), "--eval-seqlen", str(args.eval_seqlen),
               "--eval-windows", str(args.eval_windows)]
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        res[name] = json.loads(out.stdout.strip().splitlines()[-1])
    a = np.unpackbits(np.load(tmp / "mask_ours.npy"))
    b = np.unpackbits(np.load(tmp / "mask_sequential.npy"))
    differ = float(np.mean(a != b))
    jac = float(np.sum(a & b) / np.sum(a | b))
    o, s = res["ours"], res["sequential"]
    print(f"model={args.model} calib news {args.nsamples}x{args.seqlen} wanda row-wise {args.ratio:.0%} MLP; "
          f"ppl on wiki seqlen {args.eval_seqlen}, {args.eval_windows} windows")
    print(f"{'':12} {'time s':>8} {'peak extra MB':>14} {'ppl':>9}")
    print(f"{'one-pass':12} {o['seconds']:>8.2f} {o['peak_extra_mb']:>14.0f} {o['ppl']:>9.3f}")
    print(f"{'layer-wise':12} {s['seconds']:>8.2f} {s['peak_extra_mb']:>14.0f} {s['ppl']:>9.3f}")
    print(f"speed-up {s['seconds'] / o['seconds']:.2f}x; MLP masks differ on {differ:.2%} of weights "
          f"(Jaccard of pruned sets {jac:.3f})")


if __name__ == "__main__":
    main()
