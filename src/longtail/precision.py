"""Training precision: train.precision as chosen, resolved for the machine that trains (`auto`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

# CPU flags (/proc/cpuinfo) of the units oneDNN runs bfloat16 convolutions and matmuls on.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
# GPUs from compute capability 8.0 (Ampere) compute bfloat16 natively; 7.0 brought float16 tensor cores.
BF16_GPU_CAPABILITY, FP16_GPU_CAPABILITY = (8, 0), (7, 0)
# What `auto` picks on a CPU with bfloat16 units (README "Training precision"): bfloat16 pays there, if
# less than on a GPU. On AMX cores `longtail train` took 26-27% less CPU time per image than float32
# plain fit at 28 and 64 px (benchmarks/train.py), and the demo's train step 7 min 35 s instead of
# 9 min 20 s, at -0.003 test macro-F1.
AUTO_ON_BF16_CPU = "mixed_bfloat16"


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The flags of the first CPU in /proc/cpuinfo (empty where there is no such file)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def resolve_precision(choice: str, gpu_capabilities: Sequence[tuple[int, int]], flags: Iterable[str]) -> str:
    """The Keras dtype policy a training runs under.

    Args:
        choice: train.precision (float32, mixed_bfloat16, mixed_float16 or auto).
        gpu_capabilities: the compute capability of each GPU training uses (empty: the CPU trains).
        flags: the CPU's flags (cpu_flags()).

    Returns:
        "float32", "mixed_bfloat16" or "mixed_float16". `auto` takes bfloat16 on GPUs that compute it,
        float16 on older tensor-core GPUs, AUTO_ON_BF16_CPU on CPUs with bfloat16 units, else float32.
        An explicit mixed_float16 without a GPU is float32: CPUs have no float16 units to pay for it.
    """
    if choice == "mixed_float16" and not gpu_capabilities:
        return "float32"
    if choice != "auto":
        return choice
    if gpu_capabilities:
        oldest = min(gpu_capabilities)
        if oldest >= BF16_GPU_CAPABILITY:
            return "mixed_bfloat16"
        return "mixed_float16" if oldest >= FP16_GPU_CAPABILITY else "float32"
    return AUTO_ON_BF16_CPU if set(flags) & set(BF16_CPU_FLAGS) else "float32"
