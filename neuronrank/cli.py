"""`python -m neuronrank <command>`: exit 0 on success; bad input -> one `error:` line on stderr, exit 2.
`--json` prints one JSON object as the last stdout line.

Other exits, each with one `error:` line: 1 = the run finished and its results are in the run store,
but an output (--save, --save_model, --save-masks) could not be written or a zero-shot task failed after the prune;
130 = Ctrl-C, 143 = SIGTERM (a timeout, a container stop): the run is recorded as cancelled."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

from neuronrank.analysis.scoring import dead_mask
from neuronrank.analysis.numbers import finite, ppl_text
from neuronrank.config import protocols, requests
from neuronrank.config.fields import add_arguments, from_args
from neuronrank.data.inputs import check_inputs
from neuronrank.engine import models
from neuronrank.errors import Terminated, UserError

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
        print(json.dumps(finite(payload), default=str, allow_nan=False))  # a diverged perplexity: null


def cmd_stats(args) -> int:
    from neuronrank.data.paths import check_output_file
    from neuronrank.engine.statistics import get_stats

    out = Path(args.out) if args.out else None
    if out is not None and out.suffix != ".parquet":
        raise UserError(f"--out must end in .parquet (got {args.out})")
    req = from_args(requests.StatsRequest, args)
    req.validate()
    check_inputs(req)
    if out is not None:
        out = check_output_file(args.out, "--out")  # before the model loads
    bar = _tqdm_progress("stats")
    try:
        res = get_stats(req, progress=bar, recompute=args.recompute, device_map=args.device_map)
    finally:
        bar.close()
    from neuronrank.engine import distributed

    if distributed.rank() != 0:  # under torchrun only rank 0 reports
        return 0
    table = res.entry.path / "stats.parquet"
    if out is not None:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{out.name}.tmp")
            shutil.copyfile(table, tmp)
            tmp.replace(out)
        except OSError as e:  # the statistics themselves are safe in the cache
            raise UserError(f"--out {args.out} was not written ({e.strerror or e}); the statistics are kept "
                            f"in cache entry {res.entry.key}: {table}") from e
        table = out
    s = res.stats
    print(f"{'loaded from cache' if res.cached else 'computed'} in {res.seconds:.1f}s: "
          f"{s.n_layers} layers x {s.width} neurons, site={s.site}, T={int(s.tokens[0])} tokens/layer")
    print(f"table: {table}")
    print(f"cache entry: {res.entry.key}")
    tf, idf = s.tf, s.idf
    # dead: scoring.dead_mask (active on fewer than 0.1 % of the tokens), the app's and ablate's definition
    print(f"{'layer':>5} {'tokens':>8} {'TF min':>9} {'TF max':>9} {'IDF min':>8} {'IDF max':>8} {'dead':>5}")
    for i in range(s.n_layers):
        print(f"{i:>5} {int(s.tokens[i]):>8} {tf[i].min():>9.4f} {tf[i].max():>9.4f} "
              f"{idf[i].min():>8.3f} {idf[i].max():>8.3f} {int(dead_mask(s.n_active[i], s.tokens[i]).sum()):>5}")
    _emit(args, {"command": "stats", "table": str(table), "cache_key": res.entry.key, "cached": res.cached,
                 "seconds": round(res.seconds, 3), "layers": s.n_layers, "neurons_per_layer": s.width,
                 "tokens": int(s.tokens[0]), "site": s.site})
    return 0


def _stage_printer():
    """(fraction, message) -> one tqdm bar per stage."""
    from tqdm import tqdm

    from neuronrank.runs.progress import stage_progress

    state = {"stage": None, "bar": None}

    def update(fraction: float, message: str, force: bool = False) -> None:
        stage, detail, _ = stage_progress(message)
        if stage != state["stage"]:
            if state["bar"] is not None:
                state["bar"].close()
            state["stage"] = stage
            state["bar"] = tqdm(total=1000, desc=stage, file=sys.stderr, dynamic_ncols=True, disable=None,
                                bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")
        state["bar"].n = int(fraction * 1000)
        state["bar"].set_postfix_str(detail, refresh=True)

    update.close = lambda: state["bar"] is not None and state["bar"].close()
    return update


def _run_with_bar(kind: str, req, group: str | None = None) -> tuple[int, dict]:
    """Run in this process (recorded in the run store) with a progress bar per stage."""
    from neuronrank.queue import jobs

    bar = _stage_printer()
    try:
        return jobs.run_here(kind, req, progress=bar, group=group)
    finally:
        bar.close()


def _preflight(req) -> None:
    """Fail before anything heavy loads: the parameters, then what they name on disk, then (prune)
    the layer count from the model's config."""
    req.validate()
    check_inputs(req)
    if getattr(req, "pruning_last", None):
        n_layers = models.layer_count(req.model)
        if n_layers is not None:
            req.check_layers(n_layers)


def cmd_prune(args) -> int:
    req = from_args(requests.PruneRequest, args)
    if args.protocol:
        req = protocols.with_protocol(req, args.protocol, models.config_context(req.model))
        print(protocols.protocol_settings(req, args.protocol))
    _preflight(req)
    run_id, res = _run_with_bar("prune", req)
    proto = res["protocol"]
    print(f"run {run_id}: {req.prune_method} {req.sparsity_type} ratio={req.sparsity_ratio:g}"
          + (f" last={req.pruning_last}" if req.pruning_last else "")
          + (f" alpha={req.alpha:g} beta={req.beta:g} gamma={req.gamma:g}" if req.method.uses_exponents else "")
          + (f" owl M={req.owl_m:g} lambda={req.owl_lam:g}" if req.owl else "")
          + (" compensate=mean" if req.compensation == "mean" else ""))
    if "owl" in res:
        sp = res["owl"]["sparsity"]
        print(f"OWL layer sparsity: {min(sp):.4f} to {max(sp):.4f} (mean {sum(sp) / len(sp):.4f})")
    print(f"perplexity ({proto['source']}, seqlen {proto['seqlen']}, {proto['windows']} windows, "
          f"{proto['tokens']:,} tokens): dense {ppl_text(res['dense_ppl'])} -> pruned {ppl_text(res['pruned_ppl'])}")
    sp = res["sparsity"]
    print(f"sparsity: MLP {sp['mlp']:.4f}, attention {sp['attention']:.4f}, all decoder linears {sp['all_linear']:.4f}")
    for task, m in res.get("zero_shot", {}).items():
        print(f"zero-shot {task}: " + ", ".join(f"{k} {v:.4f}" for k, v in m.items()))
    print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in res["timings"].items()))
    for key in ("saved_model", "saved_masks", "saved"):
        if key in res:
            print(f"{key.replace('_', ' ')}: {res[key]['path']}" + (f" ({res[key]['format']})" if 'format' in res[key] else ""))
    _emit(args, {"command": "prune", "run_id": run_id, **res})
    return _not_written(run_id, res)


def _not_written(run_id: int, res: dict) -> int:
    """The run is done and stored; an output that failed, or a zero-shot task that failed after the
    prune, is one error line and exit code 1."""
    what = []
    if res.get("zero_shot_failed"):
        what.append(res["zero_shot_failed"]["error"])
    if res.get("not_written"):
        what.append("not written: " + "; ".join(f"{m['target']} {m['path']}: {m['error']}" for m in res["not_written"]))
    if not what:
        return 0
    print(f"error: {'; '.join(what)} (the results are kept in the run store as run {run_id})", file=sys.stderr)
    return 1


def cmd_ppl(args) -> int:
    req = from_args(requests.PplRequest, args)
    _preflight(req)
    run_id, res = _run_with_bar("ppl", req)
    p = res["protocol"]
    print(f"perplexity {ppl_text(res['ppl'])} ({p['source']}, seqlen {p['seqlen']}, {p['windows']} windows, "
          f"{p['tokens']:,} predicted tokens){' [cached]' if res['cached'] else ''}")
    _emit(args, {"command": "ppl", "run_id": run_id, **res})
    return 0


def cmd_sweep(args) -> int:
    sweep = from_args(requests.SweepRequest, args)
    sweep.validate()
    check_inputs(sweep)
    grid = sweep.grid()
    group = requests.new_sweep_group()
    rows = []
    for i, req in enumerate(grid, 1):
        print(f"[{i}/{len(grid)}] ratio={req.sparsity_ratio:g} alpha={req.alpha:g} "
              f"beta={req.beta:g} gamma={req.gamma:g}", file=sys.stderr)
        run_id, res = _run_with_bar("prune", req, group=group)
        rows.append({"run_id": run_id, "ratio": req.sparsity_ratio, "alpha": req.alpha,
                     "beta": req.beta, "gamma": req.gamma, "dense_ppl": res["dense_ppl"],
                     "pruned_ppl": res["pruned_ppl"], "mlp_sparsity": res["sparsity"]["mlp"]})
    proto = res["protocol"]
    print(f"sweep {group}: {sweep.prune_method} {sweep.sparsity_type}; ppl on {proto['source']}, seqlen "
          f"{proto['seqlen']}, {proto['windows']} windows")
    print(f"{'run':>5} {'ratio':>6} {'alpha':>6} {'beta':>6} {'gamma':>6} {'dense':>9} {'pruned':>9}")
    for r in rows:
        print(f"{r['run_id']:>5} {r['ratio']:>6g} {r['alpha']:>6g} {r['beta']:>6g} {r['gamma']:>6g} "
              f"{ppl_text(r['dense_ppl']):>9} {ppl_text(r['pruned_ppl']):>9}")
    _emit(args, {"command": "sweep", "group": group, "protocol": proto, "runs": rows})
    return 0


def cmd_search(args) -> int:
    from neuronrank.search import study as search

    req = from_args(requests.SearchRequest, args)
    _preflight(req)
    search.open_storage(req.storage)  # a bad URL or an unreachable database: one error line, now
    run_id, res = _run_with_bar("search", req)
    ev, base, best = res.get("evaluation") or {}, res.get("baselines") or {}, res.get("best")
    print(f"study {res['study']} ({res['storage']}): {res['trials']} trials finished, {res['pruned']} stopped "
          f"early, {res['failed']} failed; {res['wall_seconds']:.0f}s")
    print(f"{req.prune_method} {req.sparsity_type} ratio={req.sparsity_ratio:g}; perplexity on {ev.get('source')}, "
          f"seqlen {ev.get('seqlen')}, {ev.get('windows')} windows (halving after {ev.get('chunks')})")
    if best:
        print(f"best: trial {best['trial']} alpha={best['alpha']:.4f} beta={best['beta']:.4f} "
              f"gamma={best['gamma']:.4f}" + (f" owl_lambda={best['owl_lambda']:.4f}" if "owl_lambda" in best else "")
              + f" ppl {ppl_text(best['ppl'])}")
    for name, b in base.items():
        print(f"baseline {name}: ppl {ppl_text(b.get('ppl'))}" + (f" (group {b['group']})" if 'group' in b else ""))
    pt = res.get("per_trial")
    if pt:
        m = pt["median"]
        print(f"per trial (median): {m['total']:.2f}s, evaluation {m['eval']:.2f}s; overhead beyond evaluation "
              f"{pt['overhead_with_between_median']:.3f}s (prune {m['prune']:.3f}s, restore {m['restore']:.3f}s, "
              f"suggest {m['suggest']:.3f}s, between trials {m['between'] or 0:.3f}s)")
    _emit(args, {"command": "search", "run_id": run_id, **res})
    return 0


def cmd_ablate(args) -> int:
    req = from_args(requests.AblateRequest, args)
    _preflight(req)
    req.validate(models.layer_count(req.model), models.mlp_width(req.model))  # bands, neurons: before loading
    n = req.evaluation_count()
    bands = req.bands()
    print(f"ablate: up to {n} perplexity evaluations ({len(req.class_list)} classes"
          + (f" x {len(bands)} layer bands" if bands else "") + f" x (1 + {req.controls} random controls)"
          + (f" + {len(req.neuron_list())} single neurons" if req.neurons else "")
          + "), plus the dense one (cached per model and protocol); each as long as one prune's evaluation",
          flush=True)
    bar = _stage_printer()
    said = []

    def progress(fraction, message, force=False):
        if message.startswith("ablation plan:") and not said:  # the measured estimate, once
            said.append(message)
            print(message.replace("ablation plan:", "ablate:", 1), flush=True)
        bar(fraction, message, force)

    from neuronrank.queue import jobs

    try:
        run_id, res = jobs.run_here("ablate", req, progress=progress)
    finally:
        bar.close()
    ev, roles = res["eval"], res["roles"]
    how = (f"per-layer quantile {roles['quantile']:g}" if roles["quantile"] is not None else
           f"TF > {roles['tf_threshold']:g}, IDF > {roles['idf_threshold']:g}")
    print(f"run {run_id}: role ablation ({how}; dead = active on < {roles['dead_below']:.1%} of the tokens), "
          f"statistics {res['stats_key']}")
    print(f"perplexity ({ev['source']}, seqlen {ev['seqlen']}, {ev['windows']} windows, {ev['tokens']:,} tokens): "
          f"dense {ppl_text(res['dense_ppl'])}")
    if res["classes"]:
        print(f"{'class':<12} {'layers':>7} {'neurons':>8} {'ppl':>10} {'Δppl':>9} {'random mean':>12} "
              f"{'± sd':>8} {'n':>3}")
        for c in res["classes"]:
            delta = "–" if c["ppl"] is None else f"{c['delta_ppl']:+.3f}"
            sd = "–" if c["random_std"] is None else f"{c['random_std']:.3f}"
            print(f"{c['class']:<12} {c['layers']:>7} {c['neurons']:>8,} {ppl_text(c['ppl']):>10} {delta:>9} "
                  f"{ppl_text(c['random_mean']) if c['random_ppl'] else '–':>12} {sd:>8} {len(c['random_ppl']):>3}")
    for nrow in res["neurons"]:
        print(f"neuron {nrow['layer']}:{nrow['neuron']}: ppl {ppl_text(nrow['ppl'])} "
              f"({'–' if nrow['ppl'] is None else format(nrow['delta_ppl'], '+.4f')})")
    s = res["seconds"]
    print(f"{res['evaluations']} evaluations" + (f", {s['per_evaluation']:.3g} s each (median)"
                                                  if s["per_evaluation"] is not None else "")
          + f"; {s['total']:.0f} s in all")
    _emit(args, {"command": "ablate", "run_id": run_id, **res})
    return 0


def _quiet_transformers(verbose: bool) -> None:
    """transformers draws its own loading bars and warnings on stderr; ours is the only bar."""
    if not verbose:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    """Flags of a prune-like command that are not run parameters (not stored with the run)."""
    p.add_argument("--cache_dir", "--cache-dir", default=None, help="Hugging Face download cache (as in Wanda)")
    p.add_argument("--json", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m neuronrank", description="NeuronRank Studio command line")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("stats", help="per-neuron TF / IDF / |W| over calibration text (cached)")
    add_arguments(p, requests.StatsRequest)
    p.add_argument("--recompute", action="store_true", help="ignore a cached entry")
    p.add_argument("--device-map", "--device_map", default=None, choices=["auto"],
                   help="auto: spread a model larger than one GPU over all devices (accelerate)")
    p.add_argument("--out", help="also write the table to this .parquet file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("prune", help="prune with NeuronRank-OLD or a baseline, then evaluate perplexity")
    add_arguments(p, requests.PruneRequest)
    p.add_argument("--protocol", choices=list(protocols.PROTOCOLS), default=None,
                   help="wanda: every choice of upstream Wanda (all linears, per-row groups, 128 samples, "
                        "seqlen = the model's context (capped), c4 calibration, sequential, wikitext2 "
                        "evaluation over all windows); overrides those flags and prints them")
    _add_run_flags(p)
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("ppl", help="perplexity of a model (Wanda protocol)")
    add_arguments(p, requests.PplRequest)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ppl)

    p = sub.add_parser("sweep", help="a grid of prune runs (exponents and/or sparsities), one after another")
    add_arguments(p, requests.SweepRequest, skip=requests.SWEPT + ("save", "save_model", "save_masks"))
    _add_run_flags(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("ablate", help="zero each role class (and random sets like it) and measure perplexity")
    add_arguments(p, requests.AblateRequest)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser("search", help="an Optuna study over the NeuronRank-OLD exponents (baselines included)")
    add_arguments(p, requests.SearchRequest, skip=("alpha", "beta", "gamma", "save", "save_model", "save_masks"))
    _add_run_flags(p)
    p.set_defaults(func=cmd_search)
    return parser


def main(argv=None) -> int:
    import signal
    import threading

    parser = build_parser()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGTERM)
        from neuronrank.errors import raise_on_sigterm

        raise_on_sigterm()  # a timeout or a container stop ends the run as cancelled, one error line
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
    except Terminated as e:
        print(f"error: {e}", file=sys.stderr)
        return 128 + e.signum
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if "torch.distributed" in sys.modules:
            from neuronrank.engine import distributed

            distributed.shutdown()

