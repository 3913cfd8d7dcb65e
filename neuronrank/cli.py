"""`python -m neuronrank <command>`: exit 0 on success; bad input -> one `error:` line on stderr, exit 2.
`--json` prints one JSON object as the last stdout line."""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
from pathlib import Path

from neuronrank import corpora, models
from neuronrank.errors import UserError

log = logging.getLogger("neuronrank")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block: the contract is a single `error:` line
        raise UserError(message)


def _tqdm_progress(desc: str):
    """A tqdm bar created on the first update, so that nothing is drawn before work starts."""
    from tqdm import tqdm

    bars = []

    def update(done: int, total: int | None) -> None:
        if not bars:
            # disable=None: drawn on a terminal only, so a piped stderr carries nothing but errors
            bars.append(tqdm(desc=desc, total=total, unit="tok", unit_scale=True, file=sys.stderr,
                             dynamic_ncols=True, disable=None))
        bar = bars[0]
        if total is not None and bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    update.close = lambda: bars and bars[0].close()
    return update


def _emit(args, payload: dict) -> None:
    if getattr(args, "json", False):
        print(json.dumps(_finite(payload), default=str, allow_nan=False))


def _finite(obj):
    """JSON has no inf/NaN: a diverged perplexity is written as null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _add_stats_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=models.DEFAULT_MODEL, help="HF id, local dir, .gguf, or smollm2-135m")
    p.add_argument("--calib", default=corpora.CALIB_DEFAULT, help="news | wiki | wikitext2 | c4 | file:PATH")
    p.add_argument("--nsamples", type=int, default=64, help="calibration windows")
    p.add_argument("--seqlen", type=int, default=256, help="tokens per calibration window")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--site", default="gate", choices=["gate", "product"],
                   help="gate: act_fn(gate_proj(x)) (original); product: act_fn(gate_proj(x))*up_proj(x)")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on cuda, fp32 on cpu) | fp32 | bf16 | fp16")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--topk", type=int, default=16, help="top activations kept per neuron")
    p.add_argument("--recompute", action="store_true", help="ignore a cached entry")
    p.add_argument("--device-map", "--device_map", default=None, choices=["auto"],
                   help="auto: spread a model larger than one GPU over all devices (accelerate)")


def _stats_request(args):
    from neuronrank.pipeline import StatsRequest

    return StatsRequest(model=args.model, calib=args.calib, nsamples=args.nsamples, seqlen=args.seqlen,
                        seed=args.seed, site=args.site, dtype=args.dtype, device=args.device,
                        batch_size=args.batch_size, topk=args.topk)


def cmd_stats(args) -> int:
    from neuronrank.pipeline import get_stats

    out = Path(args.out) if args.out else None
    if out is not None and out.suffix != ".parquet":
        raise UserError(f"--out must end in .parquet (got {args.out})")
    bar = _tqdm_progress("stats")
    try:
        res = get_stats(_stats_request(args), progress=bar, recompute=args.recompute,
                        device_map=args.device_map)
    finally:
        bar.close()
    from neuronrank import distributed

    if distributed.rank() != 0:  # under torchrun only rank 0 reports
        return 0
    table = res.entry.path / "stats.parquet"
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        shutil.copyfile(table, tmp)
        tmp.replace(out)
        table = out
    s = res.stats
    print(f"{'loaded from cache' if res.cached else 'computed'} in {res.seconds:.1f}s: "
          f"{s.n_layers} layers x {s.width} neurons, site={s.site}, T={int(s.tokens[0])} tokens/layer")
    print(f"table: {table}")
    print(f"cache entry: {res.entry.key}")
    tf, idf = s.tf, s.idf
    print(f"{'layer':>5} {'tokens':>8} {'TF min':>9} {'TF max':>9} {'IDF min':>8} {'IDF max':>8} {'dead':>5}")
    for i in range(s.n_layers):
        print(f"{i:>5} {int(s.tokens[i]):>8} {tf[i].min():>9.4f} {tf[i].max():>9.4f} "
              f"{idf[i].min():>8.3f} {idf[i].max():>8.3f} {int((s.n_active[i] == 0).sum()):>5}")
    _emit(args, {"command": "stats", "table": str(table), "cache_key": res.entry.key, "cached": res.cached,
                 "seconds": round(res.seconds, 3), "layers": s.n_layers, "neurons_per_layer": s.width,
                 "tokens": int(s.tokens[0]), "site": s.site})
    return 0


def _float_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise UserError(f"expected comma-separated numbers, got {text!r}") from e


def _add_prune_args(p: argparse.ArgumentParser, sweep: bool = False) -> None:
    from neuronrank.pruning import METHODS, SPARSITY_TYPES

    p.add_argument("--model", default=models.DEFAULT_MODEL)
    p.add_argument("--prune_method", "--prune-method", default="neuronrank_old", choices=list(METHODS))
    p.add_argument("--sparsity_type", "--sparsity-type", default="unstructured", choices=list(SPARSITY_TYPES))
    p.add_argument("--pruning_last", "--pruning-last", type=int, default=None,
                   help="prune only the last N decoder layers")
    p.add_argument("--group", default="matrix", choices=["matrix", "row"],
                   help="unstructured comparison group: one threshold per matrix (original) or per output row (Wanda)")
    p.add_argument("--structured-scope", dest="scope", default="layer", choices=["layer", "global"])
    p.add_argument("--targets", default="mlp", choices=["mlp", "all"],
                   help="mlp (default) or all: adds attention projections (magnitude/wanda/random)")
    if not sweep:
        p.add_argument("--sparsity_ratio", "--sparsity-ratio", type=float, default=0.5)
        p.add_argument("--weight-exp", "--weight_exp", dest="alpha", type=float, default=1.0, help="alpha")
        p.add_argument("--tf-exp", "--tf_exp", dest="beta", type=float, default=1.0, help="beta")
        p.add_argument("--idf-exp", "--idf_exp", dest="gamma", type=float, default=1.0, help="gamma")
    p.add_argument("--calib", default=corpora.CALIB_DEFAULT)
    p.add_argument("--nsamples", type=int, default=64)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--site", default="gate", choices=["gate", "product"])
    p.add_argument("--eval", default=corpora.EVAL_DEFAULT)
    p.add_argument("--eval-seqlen", "--eval_seqlen", type=int, default=512)
    p.add_argument("--eval-windows", "--eval_windows", type=int, default=None,
                   help="cap on evaluation windows (default 16 on CPU, all on GPU; 0 = all)")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--cache_dir", "--cache-dir", default=None, help="Hugging Face download cache (as in Wanda)")
    p.add_argument("--json", action="store_true")


def _prune_params(args, **over) -> dict:
    keys = ("model", "prune_method", "sparsity_type", "pruning_last", "group", "scope", "targets", "calib",
            "nsamples", "seqlen", "seed", "site", "eval", "eval_seqlen", "eval_windows", "dtype", "device")
    params = {k: getattr(args, k) for k in keys}
    for k in ("sparsity_ratio", "alpha", "beta", "gamma", "save", "save_model"):
        if hasattr(args, k):
            params[k] = getattr(args, k)
    params.update(over)
    return params


def _stage_printer():
    """(fraction, message) -> one tqdm bar per stage."""
    from tqdm import tqdm

    state = {"stage": None, "bar": None}

    def update(fraction: float, message: str, force: bool = False) -> None:
        stage = message.split(":")[0]
        if stage != state["stage"]:
            if state["bar"] is not None:
                state["bar"].close()
            state["stage"] = stage
            state["bar"] = tqdm(total=1000, desc=stage, file=sys.stderr, dynamic_ncols=True, disable=None,
                                bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")
        state["bar"].n = int(fraction * 1000)
        state["bar"].set_postfix_str(message.split(":", 1)[1].strip() if ":" in message else "", refresh=True)

    update.close = lambda: state["bar"] is not None and state["bar"].close()
    return update


def _run_with_bar(kind: str, params: dict, group: str | None = None) -> tuple[int, dict]:
    """Run in this process (recorded in the run store) with a progress bar per stage."""
    from neuronrank import jobs

    bar = _stage_printer()
    try:
        return jobs.run_here(kind, params, progress=bar, group=group)
    finally:
        bar.close()


def _fmt_ppl(x) -> str:
    return f"{x:.3f}" if x is not None and math.isfinite(x) else "inf"


def cmd_prune(args) -> int:
    params = _prune_params(args)
    from neuronrank.pipeline import PruneRequest

    # fail before anything heavy loads: the parameters first, then the layer count from the config
    spec = PruneRequest(**params).spec()
    spec.validate()
    if spec.last is not None:
        spec.validate(models.layer_count(args.model))
    run_id, res = _run_with_bar("prune", params)
    proto = res["protocol"]
    print(f"run {run_id}: {args.prune_method} {args.sparsity_type} ratio={args.sparsity_ratio:g}"
          + (f" last={args.pruning_last}" if args.pruning_last else "")
          + (f" alpha={args.alpha:g} beta={args.beta:g} gamma={args.gamma:g}" if args.prune_method == "neuronrank_old" else ""))
    print(f"perplexity ({proto['source']}, seqlen {proto['seqlen']}, {proto['windows']} windows, "
          f"{proto['tokens']:,} tokens): dense {_fmt_ppl(res['dense_ppl'])} -> pruned {_fmt_ppl(res['pruned_ppl'])}")
    sp = res["sparsity"]
    print(f"sparsity: MLP {sp['mlp']:.4f}, attention {sp['attention']:.4f}, all decoder linears {sp['all_linear']:.4f}")
    print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in res["timings"].items()))
    for key in ("saved_model", "saved"):
        if key in res:
            print(f"{key.replace('_', ' ')}: {res[key]['path']}" + (f" ({res[key]['format']})" if 'format' in res[key] else ""))
    _emit(args, {"command": "prune", "run_id": run_id, **res})
    return 0


def cmd_ppl(args) -> int:
    params = {"model": args.model, "eval": args.eval, "eval_seqlen": args.eval_seqlen,
              "eval_windows": args.eval_windows, "dtype": args.dtype, "device": args.device}
    run_id, res = _run_with_bar("ppl", params)
    p = res["protocol"]
    print(f"perplexity {_fmt_ppl(res['ppl'])} ({p['source']}, seqlen {p['seqlen']}, {p['windows']} windows, "
          f"{p['tokens']:,} predicted tokens){' [cached]' if res['cached'] else ''}")
    _emit(args, {"command": "ppl", "run_id": run_id, **res})
    return 0


def cmd_sweep(args) -> int:
    import itertools
    import uuid

    from neuronrank.pipeline import PruneRequest

    grid = list(itertools.product(_float_list(args.ratios), _float_list(args.alphas), _float_list(args.betas),
                                  _float_list(args.gammas)))
    if not grid:
        raise UserError("the sweep grid is empty")
    combos = [_prune_params(args, sparsity_ratio=r, alpha=a, beta=b, gamma=g) for r, a, b, g in grid]
    for c in combos:
        PruneRequest(**c).spec().validate()
    group = f"sweep-{uuid.uuid4().hex[:8]}"
    rows = []
    for i, params in enumerate(combos, 1):
        print(f"[{i}/{len(combos)}] ratio={params['sparsity_ratio']:g} alpha={params['alpha']:g} "
              f"beta={params['beta']:g} gamma={params['gamma']:g}", file=sys.stderr)
        run_id, res = _run_with_bar("prune", params, group=group)
        rows.append({"run_id": run_id, "ratio": params["sparsity_ratio"], "alpha": params["alpha"],
                     "beta": params["beta"], "gamma": params["gamma"], "dense_ppl": res["dense_ppl"],
                     "pruned_ppl": res["pruned_ppl"], "mlp_sparsity": res["sparsity"]["mlp"]})
    proto = res["protocol"]
    print(f"sweep {group}: {args.prune_method} {args.sparsity_type}; ppl on {proto['source']}, seqlen "
          f"{proto['seqlen']}, {proto['windows']} windows")
    print(f"{'run':>5} {'ratio':>6} {'alpha':>6} {'beta':>6} {'gamma':>6} {'dense':>9} {'pruned':>9}")
    for r in rows:
        print(f"{r['run_id']:>5} {r['ratio']:>6g} {r['alpha']:>6g} {r['beta']:>6g} {r['gamma']:>6g} "
              f"{_fmt_ppl(r['dense_ppl']):>9} {_fmt_ppl(r['pruned_ppl']):>9}")
    _emit(args, {"command": "sweep", "group": group, "protocol": proto, "runs": rows})
    return 0


def _quiet_transformers(verbose: bool) -> None:
    """transformers draws its own loading bars and warnings on stderr; ours is the only bar."""
    if not verbose:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m neuronrank", description="NeuronRank Studio command line")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("stats", help="per-neuron TF / IDF / |W| over calibration text (cached)")
    _add_stats_args(p)
    p.add_argument("--out", help="also write the table to this .parquet file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("prune", help="prune with NeuronRank-OLD or a baseline, then evaluate perplexity")
    _add_prune_args(p)
    p.add_argument("--save", default=None, help="folder for result.json and sparsity.csv")
    p.add_argument("--save_model", "--save-model", default=None, help="folder for the pruned model")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("ppl", help="perplexity of a model (Wanda protocol)")
    p.add_argument("--model", default=models.DEFAULT_MODEL)
    p.add_argument("--eval", default=corpora.EVAL_DEFAULT)
    p.add_argument("--eval-seqlen", "--eval_seqlen", type=int, default=512)
    p.add_argument("--eval-windows", "--eval_windows", type=int, default=None)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ppl)

    p = sub.add_parser("sweep", help="a grid of prune runs (exponents and/or sparsities), one after another")
    _add_prune_args(p, sweep=True)
    p.add_argument("--ratios", default="0.5", help="comma-separated sparsity ratios")
    p.add_argument("--alphas", default="1", help="comma-separated |W| exponents")
    p.add_argument("--betas", default="1", help="comma-separated TF exponents")
    p.add_argument("--gammas", default="1", help="comma-separated IDF exponents")
    p.set_defaults(func=cmd_sweep)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        if getattr(args, "cache_dir", None):  # before huggingface_hub reads its constants
            import os

            os.environ["HF_HUB_CACHE"] = str(Path(args.cache_dir).expanduser().resolve())
        _quiet_transformers(args.verbose)
        return args.func(args)
    except UserError as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else 'invalid input'}", file=sys.stderr)
        return 2
    except OSError as e:  # unreadable or unwritable files named on the command line
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    finally:
        if "torch.distributed" in sys.modules:
            from neuronrank import distributed

            distributed.shutdown()

