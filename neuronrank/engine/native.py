"""The statistics kernels as native code (stats_kernels.cpp), built once per machine, loaded in milliseconds.

    library()          the loaded kernels, or None (no compiler, build failed, NEURONRANK_NATIVE=0)
    build()            compile into the per-machine cache now (scripts/setup.sh does; else the first use)
    act_stats, col_sq, window_sums, row_sq, col_abs_sq, down_moments
                       the operations on float32 CPU tensors (kernels.py dispatches: these where they
                       apply, its eager kernels for everything else)

Each is one read of its input (the eager kernels make 2-8 passes), which is what keeps a statistics pass
within a few per cent of a plain forward at every run size; torch.compile'd kernels read once too, but
cost seconds per process to compile. The file has no torch headers and builds in about a second with the
system C++ compiler (`c++`, or $CXX); the shared object lives in a per-machine cache
($NEURONRANK_KERNEL_CACHE, else $XDG_CACHE_HOME/neuronrank/kernels or ~/.cache/neuronrank/kernels), named by
a hash of the source, the compiler, its flags and this CPU, so a changed source or another machine builds
its own. Without a compiler the pass uses the eager kernels and says so in one log line.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)

NATIVE_ENV = "NEURONRANK_NATIVE"  # 0: never use the native kernels
CACHE_ENV = "NEURONRANK_KERNEL_CACHE"
SOURCE = Path(__file__).with_name("stats_kernels.cpp")
FLAGS = ["-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-std=c++17"]
ABI = 2

_P = ctypes.c_void_p
_I = ctypes.c_int64
_LIB: dict = {}  # "lib": the loaded library or None once tried


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "neuronrank" / "kernels"


def _compiler() -> str | None:
    cxx = os.environ.get("CXX") or "c++"
    return shutil.which(cxx) or shutil.which("g++")


def _cpu_id() -> str:
    """What -march=native depends on: the CPU's feature flags (Linux), else the processor name."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _target(cxx: str) -> Path:
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    h = hashlib.sha256()
    for part in (SOURCE.read_bytes(), version.encode(), " ".join(FLAGS).encode(), _cpu_id().encode(),
                 platform.machine().encode()):
        h.update(part)
        h.update(b"\0")
    return cache_dir() / f"stats_kernels-{h.hexdigest()[:16]}.so"


def build() -> Path:
    """Compile the kernels into the cache (atomically: a half-written file is never loaded) -> its path.
    Raises OSError / subprocess.CalledProcessError on failure."""
    cxx = _compiler()
    if cxx is None:
        raise OSError("no C++ compiler (c++ / g++, or $CXX) on the PATH")
    target = _target(cxx)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run([cxx, *FLAGS, "-o", tmp, str(SOURCE)], check=True, capture_output=True, text=True,
                       timeout=300)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("built the native statistics kernels: %s", target)
    return target


def _load(path: Path):
    lib = ctypes.CDLL(str(path))
    if lib.nr_abi_version() != ABI:
        raise OSError(f"{path.name}: ABI {lib.nr_abi_version()}, expected {ABI}")
    lib.nr_act_stats.argtypes = [_P, _I, _I, _I, _P, _P, _P, ctypes.c_int]
    lib.nr_window_sums.argtypes = [_P, _I, _I, _I, _P, _P, ctypes.c_int]
    lib.nr_row_sq.argtypes = [_P, _I, _I, _P, ctypes.c_int]
    lib.nr_col_abs_sq.argtypes = [_P, _I, _I, _P, _P, ctypes.c_int]
    lib.nr_down_moments.argtypes = [_P, _P, _I, _I, _I, _I, _P, _P, _P, _P, ctypes.c_int]
    for f in (lib.nr_act_stats, lib.nr_window_sums, lib.nr_row_sq, lib.nr_col_abs_sq, lib.nr_down_moments):
        f.restype = None
    return lib


def library():
    """The loaded kernels (built on first use when the cache has none), or None; tried once per process."""
    if os.environ.get(NATIVE_ENV, "1").strip().lower() in ("0", "off", "false", "no"):
        return None
    if "lib" not in _LIB:
        try:
            path = build()
            try:
                _LIB["lib"] = _load(path)
            except OSError as e:  # a damaged file in the cache: set it aside, build again
                aside = path.with_suffix(".damaged")
                os.replace(path, aside)
                log.warning("native statistics kernels in %s could not be loaded (%s); set aside as %s, "
                            "building again", path.parent, str(e).splitlines()[0] if str(e) else "?", aside.name)
                _LIB["lib"] = _load(build())
        except (OSError, subprocess.SubprocessError) as e:
            detail = getattr(e, "stderr", None) or str(e) or type(e).__name__
            log.warning("native statistics kernels unavailable (%s); using the eager kernels",
                        detail.strip().splitlines()[0] if detail.strip() else type(e).__name__)
            _LIB["lib"] = None
    return _LIB["lib"]


def usable(t: torch.Tensor) -> bool:
    """A tensor the native kernels read directly: float32, on the CPU, contiguous."""
    return t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous()


# The operations, on tensors for which usable() holds (the caller checks; kernels.py falls back to its eager
# kernels for the rest). Outputs are new tensors, float64 sums as the eager kernels give.

def act_stats(lib, a3: torch.Tensor, want_top: bool):
    """[W, S, n] -> ([4, n] Σa, Σ|a|, Σa², n_active, (window max [W, n], its first position) or None)."""
    W, S, n = a3.shape
    sums = torch.empty(4, n, dtype=torch.float64)
    if not want_top:
        lib.nr_act_stats(a3.data_ptr(), W, S, n, sums.data_ptr(), None, None, torch.get_num_threads())
        return sums, None
    vals, pos = torch.empty(W, n), torch.empty(W, n, dtype=torch.int64)
    lib.nr_act_stats(a3.data_ptr(), W, S, n, sums.data_ptr(), vals.data_ptr(), pos.data_ptr(),
                     torch.get_num_threads())
    return sums, (vals, pos)


def col_sq(lib, x: torch.Tensor) -> torch.Tensor:
    """[R, F] -> Σ over rows of x², float64 [F]."""
    R, F = x.shape
    out = torch.empty(F, dtype=torch.float64)
    lib.nr_window_sums(x.data_ptr(), 1, R, F, None, out.data_ptr(), torch.get_num_threads())
    return out


def window_sums(lib, x3: torch.Tensor):
    """[W, S, n] -> per window (Σx, Σx²), float64 [W, n] each."""
    W, S, n = x3.shape
    s1, s2 = torch.empty(W, n, dtype=torch.float64), torch.empty(W, n, dtype=torch.float64)
    lib.nr_window_sums(x3.data_ptr(), W, S, n, s1.data_ptr(), s2.data_ptr(), torch.get_num_threads())
    return s1, s2


def row_sq(lib, w: torch.Tensor) -> torch.Tensor:
    """[R, C] -> Σ_c w[r, c]² per row, float64 [R] (a weight matrix's squared row norms)."""
    out = torch.empty(w.shape[0], dtype=torch.float64)
    lib.nr_row_sq(w.data_ptr(), w.shape[0], w.shape[1], out.data_ptr(), torch.get_num_threads())
    return out


def col_abs_sq(lib, w: torch.Tensor):
    """[R, C] -> (Σ_r |w[r, c]|, Σ_r w[r, c]²) per column, float64 [C] each, in one read."""
    sabs, ssq = torch.empty(w.shape[1], dtype=torch.float64), torch.empty(w.shape[1], dtype=torch.float64)
    lib.nr_col_abs_sq(w.data_ptr(), w.shape[0], w.shape[1], sabs.data_ptr(), ssq.data_ptr(), torch.get_num_threads())
    return sabs, ssq


def down_moments(lib, s1: torch.Tensor, s2: torch.Tensor, first: int, T: int, c, a, b, d) -> None:
    """hooks.DownMoments.add's update of c, a, b [n], d [] (float64, contiguous, CPU) in place."""
    W, n = s1.shape
    lib.nr_down_moments(s1.data_ptr(), s2.data_ptr(), W, n, first, T, c.data_ptr(), a.data_ptr(), b.data_ptr(),
                        d.data_ptr(), torch.get_num_threads())


if __name__ == "__main__":  # python -m neuronrank.engine.native: build now (scripts/setup.sh runs it)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if library() is not None:
        log.info("native statistics kernels: ready in %s", cache_dir())
