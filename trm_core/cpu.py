"""What training on a CPU needs from the machine: which dtype `TrainConfig(dtype="auto")` picks
there, and an allocator setting that keeps freed memory for the next step.

    from trm_core.cpu import auto_cpu_dtype
    auto_cpu_dtype(hidden=512)  # DtypeChoice(dtype=torch.bfloat16, reason='avx512_bf16 in ...')

- **dtype**: bf16 only where the CPU multiplies bf16 natively (AVX512-BF16 or AMX-BF16 in
  /proc/cpuinfo) *and* a one-off probe confirms it (a 512×1024×1024 matmul in bf16 must take
  under 3/4 of the fp32 time), and only for models of hidden >= 128: below that the matmuls
  are too small for bf16 to pay (benchmarks/README.md: on an avx512_bf16 EPYC, 6x6 Sudoku
  T3 n6 batch 32, the bf16 step took 1.4x the fp32 one at hidden 32, 1.2x at 64, 0.7x at 128).
  Flags alone can mislead: a torch build or ONEDNN_MAX_CPU_ISA that stops short of them
  emulates bf16, 3–100x slower than fp32. The probe (≈ 0.1 s) runs once per machine, torch
  build and ISA setting and is cached in ~/.cache/trm-lab/cpu_dtype.json ($XDG_CACHE_HOME
  respected); without the flags there is no probe and the answer is fp32.
- **Allocator**: glibc serves blocks above a threshold (128 KiB–32 MiB) with mmap and unmaps
  them on free, so every step page-faults its activations in again (a TRM-MLP batch-32 fp32
  step: 0.6–0.8 M minor faults, 3–5 s of kernel time). `retain_freed_memory` makes glibc keep
  freed memory for reuse; it changes no computed value, and the process keeps its peak size.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
PROBE_SHAPE = (512, 1024, 1024)  # m, k, n: big enough to time, small enough to be cheap
PROBE_MAX_RATIO = 0.75  # bf16 time / fp32 time below which bf16 counts as native
# Env variables that change which kernels torch uses, hence part of the cache key.
ISA_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_allocator_state: bool | None = None


@dataclass(frozen=True)
class DtypeChoice:
    dtype: torch.dtype
    reason: str


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """Feature flags of the first CPU in /proc/cpuinfo (empty where there is none)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def _cpu_model(cpuinfo: str) -> str:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return "unknown"


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trm-lab" / "cpu_dtype.json"


def probe_bf16_matmul(repeats: int = 5) -> tuple[float, float]:
    """(fp32 ms, bf16 ms), the best of `repeats` for one PROBE_SHAPE matmul on this thread pool."""
    m, k, n = PROBE_SHAPE
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=generator), torch.randn(k, n, generator=generator)
    best: list[float] = []
    for dtype in (torch.float32, torch.bfloat16):
        x, y = a.to(dtype), b.to(dtype)
        torch.mm(x, y)  # first call builds the kernel
        times: list[float] = []
        for _ in range(repeats):
            started = time.perf_counter()
            torch.mm(x, y)
            times.append(time.perf_counter() - started)
            if best and times[-1] > 4 * best[0]:
                break  # emulated bf16 (up to 100x slower): one slow call says enough
        best.append(min(times))
    return best[0] * 1e3, best[1] * 1e3


def _probe_cached(key: str) -> tuple[float, float]:
    path = _cache_file()
    with contextlib.suppress(OSError, ValueError):
        entry = json.loads(path.read_text()).get(key)
        if entry:
            return entry["fp32_ms"], entry["bf16_ms"]
    fp32_ms, bf16_ms = probe_bf16_matmul()
    with contextlib.suppress(OSError, ValueError):  # a read-only home only loses the cache
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            cache = json.loads(path.read_text())
        except (OSError, ValueError):
            cache = {}
        cache[key] = {"fp32_ms": fp32_ms, "bf16_ms": bf16_ms, "measured": time.time()}
        staging = path.with_suffix(f".{os.getpid()}.tmp")
        staging.write_text(json.dumps(cache, indent=1, sort_keys=True))
        staging.replace(path)  # atomic: concurrent trials never read half a file
    return fp32_ms, bf16_ms


BF16_MIN_HIDDEN = 128


@functools.cache
def read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def auto_cpu_dtype(hidden: int | None = None) -> DtypeChoice:
    """The dtype `dtype=auto` trains a model of width `hidden` in on this CPU, with the reason.
    Probes (once a machine, see above) only where the flags and the width allow bf16."""
    cpuinfo = read_cpuinfo()
    native = "+".join(f for f in BF16_FLAGS if f in cpu_flags(cpuinfo))
    if not native:
        seen = "no avx512_bf16/amx_bf16 flag" if cpuinfo else "no /proc/cpuinfo"
        return DtypeChoice(torch.float32, f"{seen}: bf16 would be emulated, so float32")
    if hidden is not None and hidden < BF16_MIN_HIDDEN:
        return DtypeChoice(
            torch.float32,
            f"{native} in /proc/cpuinfo, but hidden {hidden} < {BF16_MIN_HIDDEN} is too small "
            "for bf16 to pay: float32",
        )
    return _probed_choice(native)


@functools.cache
def _probed_choice(native: str) -> DtypeChoice:
    if not torch.backends.mkldnn.is_available():
        return DtypeChoice(torch.float32, f"{native} but torch lacks oneDNN: float32")
    isa = ",".join(f"{v}={os.environ[v]}" for v in ISA_VARIABLES if v in os.environ)
    key = "|".join((_cpu_model(read_cpuinfo()), native, torch.__version__, isa or "default ISA"))
    fp32_ms, bf16_ms = _probe_cached(key)
    measured = f"probe matmul bf16 {bf16_ms:.1f} ms vs fp32 {fp32_ms:.1f} ms"
    if bf16_ms < PROBE_MAX_RATIO * fp32_ms:
        return DtypeChoice(torch.bfloat16, f"{native} in /proc/cpuinfo, {measured}: bfloat16")
    return DtypeChoice(
        torch.float32, f"{native} in /proc/cpuinfo but {measured}: not native here, float32"
    )


def retain_freed_memory() -> bool:
    """Ask glibc to keep freed memory (no mmap for large blocks, no trimming), once a process.
    Returns whether it applied; False off Linux or without glibc (nothing changes then)."""
    global _allocator_state
    if _allocator_state is None:
        _allocator_state = False
        if sys.platform.startswith("linux"):
            try:
                mallopt = ctypes.CDLL(None).mallopt
            except (OSError, AttributeError):
                return False
            mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
            mallopt.restype = ctypes.c_int
            # musl's mallopt is a stub returning 0; glibc returns 1 on success.
            _allocator_state = bool(
                mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
            )
    return _allocator_state
