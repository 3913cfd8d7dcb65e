"""Sharded statistics on torch.distributed (launched by `torchrun`): each rank takes a disjoint,
contiguous share of the calibration windows; the additive sums are all-reduced (gloo on CPU, nccl on
GPU) and the per-window top-k lists all-gathered and merged, so every rank ends with exactly the
single-process result. Rank 0 writes the cache entry.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace

import numpy as np
import torch

from neuronrank.analysis.neuron_stats import fold_fluctuation, merge_topk

log = logging.getLogger(__name__)


def launched() -> bool:
    """True under torchrun (or any launcher that sets WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device) -> tuple[int, int]:
    """Initialise the default process group once; returns (rank, world size)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def share(n: int, rank: int, world: int) -> tuple[int, int]:
    """[start, end) of this rank's contiguous share of n windows (sizes differ by at most one)."""
    return rank * n // world, (rank + 1) * n // world


def shutdown() -> None:
    """Destroy the process group before exit (gloo aborts the process otherwise)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def all_reduce_stats(stats, device: torch.device, all_windows: np.ndarray):
    """Combine every rank's NeuronStats (disjoint window shares) into the full-pass NeuronStats."""
    import torch.distributed as dist

    world = dist.get_world_size()

    def summed(arr: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(arr)).to(device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.cpu().numpy()

    def gathered(arr: np.ndarray) -> list[np.ndarray]:
        t = torch.from_numpy(np.ascontiguousarray(arr)).to(device)
        out = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(out, t)
        return [o.cpu().numpy() for o in out]

    # ranks hold ascending window ranges: merge_topk keeps the earliest window first among ties
    parts = list(zip(gathered(stats.top_vals), gathered(stats.top_window), gathered(stats.top_pos)))
    top_vals, top_window, top_pos = merge_topk(parts, stats.top_vals.shape[2])
    # FLAP's fluctuation depends on the window order: each rank's terms, folded in rank (= window) order
    sums = gathered(stats.input_sum["down_in"])
    terms = {k: gathered(v) for k, v in sorted(stats.fluct.items())}
    fluct = fold_fluctuation([({k: terms[k][r] for k in terms}, sums[r]) for r in range(world)])
    return replace(
        stats,
        sum_abs=summed(stats.sum_abs), sum_act=summed(stats.sum_act), sum_sq=summed(stats.sum_sq),
        n_active=summed(stats.n_active), tokens=summed(stats.tokens),
        input_sq={name: summed(v) for name, v in sorted(stats.input_sq.items())},
        input_sum={"down_in": np.sum(sums, axis=0)}, fluct=fluct,
        top_vals=top_vals, top_window=top_window, top_pos=top_pos,
        windows=all_windows.astype(np.int32), first_window=0,
    )
