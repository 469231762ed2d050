"""The CPU the benchmark ran on: its model name and the instruction-set flags that decide its speed.

bfloat16 and int8 contenders are only as fast as the CPU's matrix-multiply
instructions: AVX512-BF16 or AMX-BF16 for bfloat16, AVX512-VNNI or AMX-INT8
for int8. The report names the CPU and says which of these it has, read from
`/proc/cpuinfo` (Linux; elsewhere the model is `platform`'s and no flag is known).
"""

from __future__ import annotations

import platform

CPUINFO = "/proc/cpuinfo"
# Flags shown in the report's header, present or absent (`features`).
KEY_FLAGS = ("avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
# Every flag listed in `meta.cpu_flags` when present, in this order.
LISTED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
# sentence-transformers' dynamic int8 quantization presets, best first, with the flag each needs.
QUANTIZATION_PRESETS = (("avx512_vnni", "avx512_vnni"), ("avx512", "avx512f"), ("avx2", "avx2"))


def parse_cpuinfo(text: str) -> tuple[str | None, set[str]]:
    """The first processor's model name and flags in a `/proc/cpuinfo` text.

    Args:
      text: the file's contents (x86: `model name` and `flags` lines; Arm:
        `Features`, and no model name on some kernels).

    Returns:
      (model name or None, set of flags).
    """
    model, flags = None, None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key in ("flags", "Features") and flags is None:
            flags = set(value.split())
        if model is not None and flags is not None:
            break
    return model, flags or set()


def read_cpuinfo(path: str = CPUINFO) -> tuple[str, set[str]]:
    """This machine's CPU model name and flags (`platform`'s names, no flags, without `/proc/cpuinfo`)."""
    try:
        with open(path, errors="replace") as f:
            model, flags = parse_cpuinfo(f.read())
    except OSError:
        model, flags = None, set()
    return model or platform.processor() or platform.machine(), flags


def features(flags: set[str]) -> dict[str, bool]:
    """Whether each of `KEY_FLAGS` is among `flags`."""
    return {flag: flag in flags for flag in KEY_FLAGS}


def summary(model: str, cores: int | None, found: dict[str, bool]) -> str:
    """One line naming the CPU and which flags it has, e.g. `CPU: AMD EPYC, 2 cores; avx512f yes, amx_bf16 no`.

    Args:
      model: the CPU's model name.
      cores: its core count (None: unknown, not shown).
      found: flag -> whether the CPU has it (`features`, or any other flags), in the order shown.
    """
    flags = ", ".join(f"{flag} {'yes' if has else 'no'}" for flag, has in found.items())
    return f"CPU: {model}" + (f", {cores} cores" if cores else "") + (f"; {flags}" if flags else "")


def listed_flags(flags: set[str]) -> list[str]:
    """The `LISTED_FLAGS` among `flags`, in that order."""
    return [flag for flag in LISTED_FLAGS if flag in flags]


def quantization_preset(flags: set[str], machine: str | None = None) -> str:
    """The sentence-transformers int8 quantization preset that fits a CPU with these flags.

    Args:
      flags: the CPU's flags.
      machine: `platform.machine()` (default: this machine's); Arm machines get `arm64`.

    Returns:
      One of `avx512_vnni`, `avx512`, `avx2`, `arm64` (the last also for an x86 CPU without AVX2).
    """
    machine = platform.machine() if machine is None else machine
    if machine.lower() in ("aarch64", "arm64"):
        return "arm64"
    for preset, flag in QUANTIZATION_PRESETS:
        if flag in flags:
            return preset
    return "arm64"
