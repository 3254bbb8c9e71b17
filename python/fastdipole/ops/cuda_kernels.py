"""Which CUDA envsum kernels run: the environment variables ``csrc/cuda/envsum.cu`` reads at every launch.

Users need none of them: the defaults are the fastest kernels measured so far; forcing another kernel is for
tests and benchmarks. This module is their one list, read by the CUDA tests, the CPU
emulator test of the CUDA kernels, the compute-sanitizer smoke run (``tools/cuda_smoke.py``) and the GPU
benchmarks (``benchmarks/gpu.py``, ``benchmarks/gpu_profile.py``), so promoting or dropping a variant is one
edit here (and its code in ``csrc/cuda``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

# Every knob with the value the launchers assume when it is unset (the default kernels).
DEFAULTS: dict[str, str] = {
    # auto: the lanes kernels for n_sens <= 32 and >= 16 features (backward: float32 only), else block / tiled
    "FASTDIPOLE_CUDA_ENVSUM_FORWARD": "auto",  # auto | lanes | block
    "FASTDIPOLE_CUDA_ENVSUM_BACKWARD": "auto",  # auto | lanes | tiled
}

# Alternatives to the default forward / backward kernel, by label: the knobs that differ from DEFAULTS.
FORWARD_VARIANTS: dict[str, dict[str, str]] = {
    "block": {"FASTDIPOLE_CUDA_ENVSUM_FORWARD": "block"},
}
BACKWARD_VARIANTS: dict[str, dict[str, str]] = {
    "tiled": {"FASTDIPOLE_CUDA_ENVSUM_BACKWARD": "tiled"},
}

# What the correctness checks run, by name (each runs a forward and a backward): the defaults, the lanes kernels
# also where "auto" picks others (fewer than 16 features), and the block / tiled kernels where it picks lanes.
TEST_CONFIGURATIONS: dict[str, dict[str, str]] = {  # "forward / backward": the knobs that differ from DEFAULTS
    "default": {},
    "lanes / lanes": {"FASTDIPOLE_CUDA_ENVSUM_FORWARD": "lanes", "FASTDIPOLE_CUDA_ENVSUM_BACKWARD": "lanes"},
    "block / tiled": {**FORWARD_VARIANTS["block"], **BACKWARD_VARIANTS["tiled"]},
}


def environment(*overrides: Mapping[str, str]) -> dict[str, str]:
    """Every knob spelled out: DEFAULTS updated by the overrides in order (a variant's knobs, say)."""
    env = dict(DEFAULTS)
    for knobs in overrides:
        unknown = set(knobs) - set(DEFAULTS)
        if unknown:
            raise KeyError(f"not a CUDA kernel knob: {sorted(unknown)}")
        env.update(knobs)
    return env


def configuration(name: str) -> dict[str, str]:
    """The full environment of one of TEST_CONFIGURATIONS."""
    return environment(TEST_CONFIGURATIONS[name])


@contextmanager
def kernel_environment(*overrides: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """Runs the block with environment(*overrides) set in os.environ; restores the previous values after."""
    env = environment(*overrides)
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
