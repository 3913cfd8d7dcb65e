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
            bars.append(tqdm(desc=desc, total=total, unit="tok", unit_scale=True, file=sys.stderr,
                             dynamic_ncols=True))
        bar = bars[0]
        if total is not None and bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    update.close = lambda: bars and bars[0].close()
    return update


def _emit(args, payload: dict) -> None:
    if getattr(args, "json", False):
        print(json.dumps(payload, default=str, allow_nan=False))


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
        res = get_stats(_stats_request(args), progress=bar, recompute=args.recompute)
    finally:
        bar.close()
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
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        _quiet_transformers(args.verbose)
        return args.func(args)
    except UserError as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else 'invalid input'}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def finite(x: float) -> float | None:
    return x if x is not None and math.isfinite(x) else None
