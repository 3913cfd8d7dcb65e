"""The CUDA path: skipped cleanly without a GPU; on one, bf16 statistics and perplexity agree with fp32 CPU."""

import numpy as np
import pytest
import torch

from neuronrank.evaluate import perplexity
from neuronrank.stats import batched, collect
from tests.conftest import make_tiny

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
def test_stats_on_cuda_match_cpu(tiny_windows):
    cpu = make_tiny()
    ref = collect(cpu, batched(tiny_windows, 3))
    gpu = make_tiny().to("cuda")
    got = collect(gpu, batched(tiny_windows, 3))
    np.testing.assert_allclose(got.tf, ref.tf, rtol=1e-4)
    np.testing.assert_array_equal(got.tokens, ref.tokens)
    bf = make_tiny().to("cuda", torch.bfloat16)
    low = collect(bf, batched(tiny_windows, 3))
    np.testing.assert_allclose(low.tf, ref.tf, rtol=0.1, atol=1e-2)  # bf16 activations: ~3 digits


@needs_cuda
def test_perplexity_on_cuda_matches_cpu(tiny_windows):
    ref = perplexity(make_tiny(), tiny_windows).ppl
    assert perplexity(make_tiny().to("cuda"), tiny_windows).ppl == pytest.approx(ref, rel=1e-4)


def test_gpu_bench_smoke():
    """The GPU benchmark script itself runs (tiny shape, on the CPU here)."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "bench/gpu_llama7b.py", "--shape", "tiny", "--seqlen", "64", "--batches", "2",
                        "--reps", "1", "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "RESULT gpu_stats_overhead_ratio" in r.stdout
