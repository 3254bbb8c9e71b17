"""Which CUDA envsum kernels run: the environment variables ``csrc/cuda/envsum.cu`` reads at every launch.

Users need none of them: the defaults are the fastest kernels measured so far. The opt-in variants are
candidates waiting to be timed on a GPU. This module is their one list, read by the CUDA tests, the CPU
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
    "FASTDIPOLE_CUDA_ENVSUM_BACKWARD": "auto",  # auto | lanes | tiled | warp | segments
    "FASTDIPOLE_CUDA_LANES_MAX_COLUMNS": "4",  # forward: feature columns of 32 per lane, at most (1, 2, 4)
    "FASTDIPOLE_CUDA_LANES_BACKWARD_COLUMNS": "2",  # backward: the same (1, 2, 4)
    "FASTDIPOLE_CUDA_ENVSUM_FEATSUM": "sorted",  # sorted (deterministic) | atomic
    "FASTDIPOLE_CUDA_LANES_PIPELINE": "0",  # 1: the lanes forward loads the next sender rows early
    "FASTDIPOLE_CUDA_LANES_DS": "warp-sum",  # warp-sum | items
}

_ATOMIC = {"FASTDIPOLE_CUDA_ENVSUM_FEATSUM": "atomic"}
_FOUR = {"FASTDIPOLE_CUDA_LANES_BACKWARD_COLUMNS": "4"}
_ITEMS = {"FASTDIPOLE_CUDA_LANES_DS": "items"}

# Alternatives to the default forward / backward kernel, by label: the knobs that differ from DEFAULTS.
FORWARD_VARIANTS: dict[str, dict[str, str]] = {
    "lanes, 2 columns": {"FASTDIPOLE_CUDA_LANES_MAX_COLUMNS": "2"},
    "lanes, pipelined": {"FASTDIPOLE_CUDA_LANES_PIPELINE": "1"},
    "block": {"FASTDIPOLE_CUDA_ENVSUM_FORWARD": "block"},
}
BACKWARD_VARIANTS: dict[str, dict[str, str]] = {
    "lanes, atomic featsum": _ATOMIC,
    "lanes, 4 columns": _FOUR,
    "lanes, 4 columns, atomic featsum": {**_FOUR, **_ATOMIC},
    "lanes, item dS, 2 columns": _ITEMS,
    "lanes, item dS, 4 columns": {**_ITEMS, **_FOUR},
    "lanes, item dS, 4 columns, atomic featsum": {**_ITEMS, **_FOUR, **_ATOMIC},
    "segments": {"FASTDIPOLE_CUDA_ENVSUM_BACKWARD": "segments"},
    "tiled": {"FASTDIPOLE_CUDA_ENVSUM_BACKWARD": "tiled"},
    "warp": {"FASTDIPOLE_CUDA_ENVSUM_BACKWARD": "warp"},
}

# What the correctness checks run, by name (each runs a forward and a backward): the defaults, the lanes kernels
# also where "auto" picks others (fewer than 16 features), then every variant at least once, the lanes ones
# with the lanes kernels forced too.
_FORCE_LANES = {"FASTDIPOLE_CUDA_ENVSUM_FORWARD": "lanes", "FASTDIPOLE_CUDA_ENVSUM_BACKWARD": "lanes"}


def _lanes(forward: str | None = None, backward: str | None = None) -> dict[str, str]:
    return {**_FORCE_LANES, **FORWARD_VARIANTS.get(forward, {}), **BACKWARD_VARIANTS.get(backward, {})}


TEST_CONFIGURATIONS: dict[str, dict[str, str]] = {  # "forward / backward": the knobs that differ from DEFAULTS
    "default": {},
    "lanes / lanes": _lanes(),
    "lanes, 2 columns / lanes, atomic featsum": _lanes("lanes, 2 columns", "lanes, atomic featsum"),
    "lanes, pipelined / lanes, 4 columns": _lanes("lanes, pipelined", "lanes, 4 columns"),
    "lanes, pipelined / lanes, 4 columns, atomic featsum": _lanes("lanes, pipelined", "lanes, 4 columns, atomic featsum"),
    "lanes / lanes, item dS, 2 columns": _lanes(None, "lanes, item dS, 2 columns"),
    "lanes, 2 columns / lanes, item dS, 4 columns": _lanes("lanes, 2 columns", "lanes, item dS, 4 columns"),
    "lanes / lanes, item dS, 4 columns, atomic featsum": _lanes(None, "lanes, item dS, 4 columns, atomic featsum"),
    "lanes / segments": {**_FORCE_LANES, **BACKWARD_VARIANTS["segments"]},
    "block / tiled": {**FORWARD_VARIANTS["block"], **BACKWARD_VARIANTS["tiled"]},
    "block / warp": {**FORWARD_VARIANTS["block"], **BACKWARD_VARIANTS["warp"]},
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
