"""What this machine offers the numerics: the CPU's feature flags (read from /proc/cpuinfo, or the
ones model.cpu_features names, to act as another CPU), and whether TensorFlow sees a GPU.

Only a few flags change what runs and what it computes: AVX512_BF16 or AMX-BF16 (bf16 matrix
units: OpenVINO bf16 extraction and serving, mixed_bfloat16 fine-tuning), AVX512-VNNI, AVX-VNNI or
AMX-INT8 (int8 dot products: ONNX Runtime's int8 weights need not lose a bit to reduce_range).
`Cpu.key` names those flags: caches of lower-precision features are keyed on it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from fashion_exp.errors import ConfigError

BF16 = ("avx512_bf16", "amx_bf16")
VNNI = ("avx512_vnni", "avx_vnni", "amx_int8")
NUMERIC = ("avx2", "avx512f", *BF16, *VNNI)  # the flags that change what a lower-precision backend computes
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class Cpu:
    """The CPU's flags, and whether they were named in config (`forced`) rather than read."""

    flags: frozenset[str]
    forced: bool = False

    @property
    def bf16(self) -> bool:
        return any(flag in self.flags for flag in BF16)

    @property
    def vnni(self) -> bool:
        return any(flag in self.flags for flag in VNNI)

    @property
    def key(self) -> str:
        """The flags that change a lower-precision backend's numbers, e.g. "avx2" or
        "avx2+avx512_bf16+avx512_vnni+avx512f" (feature cache keys, backend records)."""
        return "+".join(sorted(self.flags & set(NUMERIC))) or "generic"

    def describe(self) -> str:
        units = [name for name, has in (("BF16", self.bf16), ("VNNI", self.vnni)) if has]
        origin = "model.cpu_features" if self.forced else "/proc/cpuinfo"
        return f"CPU with {' and '.join(units) if units else 'no BF16 or VNNI'} ({self.key}; from {origin})"


def read_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The first processor's flags in /proc/cpuinfo (empty where there is no such file)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def parse_setting(setting) -> frozenset[str] | None:
    """model.cpu_features: None for "auto" (read the CPU), else the flags it names: a list, or one
    string ("avx2 avx512_bf16", commas or spaces). Raises ConfigError, in one line, on a flag this
    project does not know."""
    if isinstance(setting, (list, tuple)):
        setting = " ".join(map(str, setting))
    words = str(setting).replace(",", " ").split()
    if words == ["auto"]:
        return None
    unknown = [word for word in words if word not in NUMERIC]
    if not words or unknown:
        raise ConfigError(
            f"model.cpu_features: {', '.join(unknown) or 'nothing'} is not a CPU flag fashion_exp reads; "
            f"pass auto or a list of {', '.join(NUMERIC)}"
        )
    return frozenset(words)


def cpu_of(setting="auto", cpuinfo: Path = CPUINFO) -> Cpu:
    """This machine's CPU as model.cpu_features says: read (auto) or the named flags (forced)."""
    named = parse_setting(setting)
    return Cpu(read_flags(cpuinfo)) if named is None else Cpu(named, forced=True)


POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def train_policy(setting: str, cpu: Cpu, gpu: bool) -> str:
    """The Keras dtype policy fine-tuned blocks train under for model.train_precision=`setting`:
    auto is mixed_float16 on a GPU, mixed_bfloat16 on a CPU with BF16 units, float32 elsewhere."""
    if setting == "auto":
        setting = "float16" if gpu else "bfloat16" if cpu.bf16 else "float32"
    return POLICIES[setting]


def gpu_visible() -> bool:
    """Whether TensorFlow sees a GPU. Where no NVIDIA driver is loaded the answer is no without
    importing TensorFlow (a service on an ONNX backend then needs none: 0.6 GB less memory)."""
    if "tensorflow" not in sys.modules and not nvidia_driver():
        return False
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def nvidia_driver() -> bool:
    """Whether this machine has an NVIDIA driver loaded (a GPU TensorFlow could use)."""
    return Path("/proc/driver/nvidia/gpus").is_dir() or Path("/dev/nvidia0").exists()
