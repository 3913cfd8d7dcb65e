"""2:4 speed on an NVIDIA GPU: Llama-2-7B's MLP matmuls, dense against PyTorch's semi-structured sparse
tensors (`torch.sparse.to_sparse_semi_structured`, the path RIA's code offers for 2:4 models).

Shapes: gate/up W [11008, 4096], down W [4096, 11008]; activations [T, in] with T = 2048 (prefill) and
16, 8, 4, 1 (decode batches). fp16 and bf16; both backends of torch's semi-structured tensors: cuSPARSELt
(the default) and CUTLASS (`SparseSemiStructuredTensor._FORCE_CUTLASS`). A backend this build or GPU
lacks prints one line and the rest goes on. Each row: dense ms, 2:4 ms (median of --reps after a warm-up,
CUDA events, with min and max), the speed-up, and max |err| against F.linear on the same pruned dense
weight; `mlp` rows add up gate + up + down at each T. On a CPU nothing runs: zeros in a dense matmul
save nothing there (bench/structured_speed.py measures it).

Usage: python bench/gpu_semi24.py [--reps 50]
"""

import argparse
import statistics
import sys

import torch
import torch.nn.functional as F

SHAPES = {"gate/up": (11008, 4096), "down": (4096, 11008)}
TOKENS = (2048, 16, 8, 4, 1)


def two_four(w: torch.Tensor) -> torch.Tensor:
    """w with the 2 smallest |w| of every 4 consecutive inputs of a row zeroed (magnitude 2:4)."""
    r, c = w.shape
    blocks = w.abs().view(r, c // 4, 4)
    idx = blocks.topk(2, dim=2, largest=False).indices
    mask = torch.zeros_like(blocks, dtype=torch.bool).scatter_(2, idx, True).view(r, c)
    return w.masked_fill(mask, 0)


def bench(fn, reps: int) -> tuple[float, float, float]:
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts), min(ts), max(ts)


def sparse_weight(w: torch.Tensor, backend: str):
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    before = SparseSemiStructuredTensor._FORCE_CUTLASS
    SparseSemiStructuredTensor._FORCE_CUTLASS = backend == "cutlass"
    try:
        return to_sparse_semi_structured(w)
    finally:
        SparseSemiStructuredTensor._FORCE_CUTLASS = before


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=50)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("RESULT semi24 skipped: no CUDA device (2:4 zeros save nothing in a dense CPU matmul)")
        return 0
    dev = torch.device("cuda")
    print(f"device {torch.cuda.get_device_name()} torch {torch.__version__} cuSPARSELt "
          f"{torch.backends.cusparselt.is_available()} version {torch.backends.cusparselt.version()}")
    g = torch.Generator(device=dev).manual_seed(0)
    for dtype in (torch.float16, torch.bfloat16):
        dname = str(dtype).removeprefix("torch.")
        total = {}  # (T, backend) -> [dense ms, sparse ms] over the MLP's three matmuls
        for name, (out_f, in_f) in SHAPES.items():
            w = two_four(torch.randn(out_f, in_f, device=dev, dtype=dtype, generator=g) * 0.02)
            sparse = {}
            for backend in ("cusparselt", "cutlass"):
                try:
                    sparse[backend] = sparse_weight(w, backend)
                except Exception as e:  # noqa: BLE001 — a backend this build/GPU lacks: say so, go on
                    print(f"RESULT semi24 {dname} {name} {backend} unavailable: {type(e).__name__}: {e}")
            for T in TOKENS:
                x = torch.randn(T, in_f, device=dev, dtype=dtype, generator=g)
                with torch.inference_mode():
                    ref = F.linear(x, w)
                    d = bench(lambda: F.linear(x, w), args.reps)
                    for backend, ws in sparse.items():
                        try:
                            err = (F.linear(x, ws) - ref).abs().max().item()
                            s = bench(lambda: F.linear(x, ws), args.reps)
                        except Exception as e:  # noqa: BLE001
                            print(f"RESULT semi24 {dname} {name} T={T} {backend} failed: {type(e).__name__}: {e}")
                            continue
                        times = 2 if name == "gate/up" else 1  # gate and up have the same shape
                        acc = total.setdefault((T, backend), [0.0, 0.0, set()])
                        acc[0] += times * d[0]
                        acc[1] += times * s[0]
                        acc[2].add(name)
                        print(f"RESULT semi24 {dname} {name} [{out_f}x{in_f}] T={T} {backend}: dense {d[0]:.4f} ms, "
                              f"2:4 {s[0]:.4f} ms (min {s[1]:.4f}, max {s[2]:.4f}), speed-up {d[0] / s[0]:.2f}x, "
                              f"max|err| {err:.3g}")
        for (T, backend), (dense_ms, sparse_ms, names) in sorted(total.items()):
            if len(names) == len(SHAPES):
                print(f"RESULT semi24 {dname} mlp (gate+up+down) T={T} {backend}: dense {dense_ms:.4f} ms, "
                      f"2:4 {sparse_ms:.4f} ms, speed-up {dense_ms / sparse_ms:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
