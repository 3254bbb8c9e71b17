"""The table of CUDA envsum kernel choices (fastdipole.ops.cuda_kernels) against the launchers that read it.

No GPU needed: the knobs and their defaults are checked against csrc/cuda/envsum.cu's source, the test
configurations for covering every variant, and kernel_environment for restoring what it changed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from fastdipole.ops import cuda_kernels

ENVSUM_CU = (Path(__file__).resolve().parents[1] / "csrc" / "cuda" / "envsum.cu").read_text()


def test_every_knob_is_read_by_the_launchers_with_the_default_the_table_states():
    for name in cuda_kernels.DEFAULTS:
        assert f'"{name}"' in ENVSUM_CU, f"{name} is not read in csrc/cuda/envsum.cu"
    # unset, kernel_choice gives "auto"
    assert re.search(r':\s*std::string\("auto"\)', ENVSUM_CU)


def test_every_variant_runs_in_some_test_configuration():
    configurations = [cuda_kernels.configuration(name) for name in cuda_kernels.TEST_CONFIGURATIONS]
    for table in (cuda_kernels.FORWARD_VARIANTS, cuda_kernels.BACKWARD_VARIANTS):
        for label, knobs in table.items():
            assert any(knobs.items() <= env.items() for env in configurations), f"variant {label!r} is never tested"
    assert cuda_kernels.configuration("default") == cuda_kernels.DEFAULTS


def test_environment_rejects_unknown_knobs():
    with pytest.raises(KeyError, match="FASTDIPOLE_CUDA_TYPO"):
        cuda_kernels.environment({"FASTDIPOLE_CUDA_TYPO": "1"})


def test_kernel_environment_sets_every_knob_and_restores_the_previous_values(monkeypatch):
    monkeypatch.setenv("FASTDIPOLE_CUDA_ENVSUM_BACKWARD", "lanes")
    monkeypatch.delenv("FASTDIPOLE_CUDA_ENVSUM_FORWARD", raising=False)
    knobs = cuda_kernels.FORWARD_VARIANTS["block"]
    with cuda_kernels.kernel_environment(knobs) as env:
        assert os.environ["FASTDIPOLE_CUDA_ENVSUM_FORWARD"] == "block"
        assert os.environ["FASTDIPOLE_CUDA_ENVSUM_BACKWARD"] == cuda_kernels.DEFAULTS["FASTDIPOLE_CUDA_ENVSUM_BACKWARD"]
        assert env == {name: os.environ[name] for name in cuda_kernels.DEFAULTS}
    assert os.environ["FASTDIPOLE_CUDA_ENVSUM_BACKWARD"] == "lanes"
    assert "FASTDIPOLE_CUDA_ENVSUM_FORWARD" not in os.environ
