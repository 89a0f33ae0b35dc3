"""Training precision: train.precision as chosen, resolved for the machine that trains (`auto`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from longtail.errors import ConfigError

# CPU flags (/proc/cpuinfo) of the units oneDNN runs bfloat16 convolutions and matmuls on.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
# GPUs from compute capability 8.0 (Ampere) compute bfloat16 natively; 7.0 brought float16 tensor cores.
BF16_GPU_CAPABILITY, FP16_GPU_CAPABILITY = (8, 0), (7, 0)
# What `auto` picks on a CPU with bfloat16 units (docs/benchmarks.md "Training precision"): bfloat16 pays there. On AMX
# cores `longtail train` in bfloat16 (with its fused batch norm) took 2.06x (28 px) and 2.52x (64 px) less
# CPU time per image than plain float32 model.fit, and 1.50x / 1.54x less than itself in float32
# (benchmarks/train.py).
AUTO_ON_BF16_CPU = "mixed_bfloat16"
# What train.jit_compile: auto picks: XLA where it was measured to pay, a CPU training in float32 on a CPU
# without AVX-512. On an AVX2-only AMD EPYC (no bfloat16 units, so auto precision is float32) XLA cut
# `longtail train`'s CPU time per image 1.45x at 28 px and 1.19x at 64 px (benchmarks/train.py). On
# AVX-512 CPUs, where oneDNN has its AVX-512 kernels, it did not: on an Intel Ice Lake VM (AVX-512, no
# bfloat16 units) it took 1.22x more CPU time per image at 28 px and 1.68x more at 64 px, and on the
# Intel AMX machine it was no faster in float32 and slower in bfloat16. GPUs are not measured: auto
# leaves them without XLA, as Keras' own default does on every device.
AUTO_JIT_POLICIES = ("float32",)
# CPU flags under which `auto` leaves XLA off: oneDNN's own float32 kernels beat XLA's there.
NO_AUTO_JIT_CPU_FLAGS = ("avx512f",)


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


def resolve_jit_compile(choice: bool | str, policy: str, on_gpu: bool, replicas: int = 1, *,
                        flags: Iterable[str]) -> bool:
    """Whether a training compiles its steps with XLA (Keras `jit_compile`).

    Args:
        choice: train.jit_compile (true, false or auto).
        policy: the dtype policy the training runs under (resolve_precision's answer).
        on_gpu: whether it trains on GPUs.
        replicas: the distribution strategy's replicas.
        flags: the CPU's flags (cpu_flags()).

    Returns:
        The choice when it is a bool; for `auto`, True on a one-replica CPU training under AUTO_JIT_POLICIES
        on a CPU without NO_AUTO_JIT_CPU_FLAGS (AVX-512).

    Raises:
        ConfigError: true across several replicas. Keras compiles the whole mirrored step, and XLA cannot
            reach another device's copy of a variable (TensorFlow's XLA known issue
            "tf.Variable on a different device"): the first step would fail.
    """
    if choice == "auto":
        return (replicas == 1 and not on_gpu and policy in AUTO_JIT_POLICIES
                and not set(flags) & set(NO_AUTO_JIT_CPU_FLAGS))
    if choice and replicas > 1:
        raise ConfigError(f"config field train.jit_compile: true cannot train across {replicas} replicas "
                          "(XLA compiles the whole mirrored step and cannot reach the other devices' variables); "
                          "write false, or auto (XLA only where one device trains)")
    return bool(choice)
