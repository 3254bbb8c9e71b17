"""Benchmark helpers: gpu_variants.py (variant rows of a gpu.py run against the default row of the same op and
shape) and sensitivity_sparsity.py (active sensitivity terms and groups)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_variants  # noqa: E402
import sensitivity_sparsity  # noqa: E402


def row(kernel, ms, dtype="float32"):
    return {"kernel": kernel, "dtype": dtype, "ms": ms}


def test_split_name():
    assert gpu_variants.split_name("gaussian_envsum_backward[tiled] S=20 F=128") == (
        "gaussian_envsum_backward", "tiled", "S=20 F=128")
    assert gpu_variants.split_name("gaussian_envsum S=20 F=60") == ("gaussian_envsum", None, "S=20 F=60")
    assert gpu_variants.split_name("neighbor_pairs") == ("neighbor_pairs", None, "")


def test_ratios_pair_variants_with_the_default_of_their_shape_and_dtype():
    rows = [row("op S=20 F=128", 2.0), row("op S=20 F=60", 1.0), row("op S=20 F=128", 4.0, "float64"),
            row("op[fast] S=20 F=128", 1.0), row("op[fast] S=20 F=60", 0.8), row("op[fast] S=20 F=128", 4.4, "float64"),
            row("op[orphan] S=7 F=7", 1.0)]
    ratios = gpu_variants.compare(rows)
    assert sorted(ratios) == [("op", "fast")]  # no default for the orphan's shape
    assert sorted(ratios[("op", "fast")]) == [("S=20 F=128", "float32", 0.5), ("S=20 F=128", "float64", 1.1),
                                              ("S=20 F=60", "float32", 0.8)]


def test_candidates_must_win_in_every_float32_lanes_shape(tmp_path):
    rows = [row("op S=20 F=128", 2.0), row("op S=20 F=60", 1.0), row("op S=20 F=5", 1.0),
            row("op[wins] S=20 F=128", 1.0), row("op[wins] S=20 F=60", 0.9), row("op[wins] S=20 F=5", 1.0),
            row("op[mixed] S=20 F=128", 1.0), row("op[mixed] S=20 F=60", 1.2)]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"device": "test", "sections": {"bandwidth": rows}}))
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_variants.py"), str(path)],
                         capture_output=True, text=True, check=True).stdout
    candidates = out.split("Candidates")[1]
    assert "op [wins]" in candidates and "mixed" not in candidates  # F = 5 (block kernels) does not count


def test_recorded_h200_run():
    # the 2026-12-01 00:32 run: the tiled backward took 0.9481 ms where the default lanes one took 0.5289 ms
    data = json.loads((REPO / "logs" / "gpu_2026-12-01c" / "gpu_bench.json").read_text())
    ratios = dict(((shape, dtype), r) for shape, dtype, r in
                  gpu_variants.compare(data["sections"]["bandwidth"])[("gaussian_envsum_backward", "tiled")])
    assert abs(ratios[("S=20 F=128", "float32")] - 0.9481 / 0.5289) < 1e-3


def test_active_fractions_count_terms_and_groups_of_four():
    # 6 sensitivities -> 2 groups (the second padded with 2 inactive slots)
    s = torch.tensor([[0.5, 0.0, 0.0, 0.0, 0.0, 0.0],     # 1 term, group 0
                      [0.0, 0.0, 0.0, 0.0, 1e-11, 0.2],   # 1 term (1e-11 is dropped), group 1
                      [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])    # nothing
    terms, groups = sensitivity_sparsity.active_fractions(s)
    assert abs(terms - 2 / 18) < 1e-12 and abs(groups - 2 / 6) < 1e-12
