"""Each forced kernel of a `benchmarks/gpu.py` run against the default kernel of the same op, shape and dtype:
which other kernel choices (rows named "op[variant] S=.. F=..") beat the default ("op S=.. F=..").

    python benchmarks/gpu_variants.py logs/gpu_<date>/gpu_bench.json [--threshold 0.05]

Prints one markdown table (variant time / default time; below 1 is faster) and, per variant, whether it beats
the default by more than the threshold in every float32 shape with at least 16 features (where the default
is the lanes kernels): the candidates for a new default.
Single runs on a shared GPU move by several percent, so a candidate should win in two runs before it is made
the default.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

ROW = re.compile(r"^(?P<op>[a-z_]+)(?:\[(?P<variant>[^\]]+)\])?(?P<shape>(?: \S+=\S+)*)$")


LANES_MIN_FEATURES = 16  # below, the default (csrc/cuda/kernel_plan.h) is already the block / tiled kernels


def n_features(shape: str) -> int:
    m = re.search(r"F=(\d+)", shape)
    return int(m.group(1)) if m else 0


def split_name(kernel: str) -> tuple[str, str | None, str]:
    """'gaussian_envsum_backward[tiled] S=20 F=128' -> ('gaussian_envsum_backward', 'tiled', 'S=20 F=128')."""
    m = ROW.match(kernel)
    if not m:
        return kernel, None, ""
    return m.group("op"), m.group("variant"), m.group("shape").strip()


def compare(rows: list[dict]) -> dict[tuple[str, str], list[tuple[str, str, float]]]:
    """(op, variant) -> [(shape, dtype, variant ms / default ms)] for every variant row with a default row."""
    default_ms = {}
    for row in rows:
        op, variant, shape = split_name(row["kernel"])
        if variant is None:
            default_ms[(op, shape, row["dtype"])] = row["ms"]
    ratios = defaultdict(list)
    for row in rows:
        op, variant, shape = split_name(row["kernel"])
        base = default_ms.get((op, shape, row["dtype"]))
        if variant is not None and base:
            ratios[(op, variant)].append((shape, row["dtype"], row["ms"] / base))
    return ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="gpu_bench.json written by benchmarks/gpu.py --json")
    parser.add_argument("--threshold", type=float, default=0.05,
                        help="a candidate must be faster than the default by this fraction in every float32 shape")
    args = parser.parse_args()
    data = json.loads(args.json.read_text())
    rows = data.get("sections", {}).get("bandwidth")
    if not isinstance(rows, list) or not rows:
        print(f"{args.json}: no bandwidth section (run gpu.py with --sections ...,bandwidth)", file=sys.stderr)
        return 2
    ratios = compare(rows)
    print(f"# kernel variants vs the default, {data.get('device', '?')} (variant ms / default ms; < 1 is faster)\n")
    print("| op | variant | shape | dtype | ratio |\n|---|---|---|---|---|")
    for (op, variant), cases in sorted(ratios.items()):
        for shape, dtype, ratio in cases:
            print(f"| {op} | {variant} | {shape} | {dtype} | {ratio:.3f} |")
    print(f"\nCandidates for a new default (faster by > {args.threshold:.0%} in every float32 shape with F >= "
          f"{LANES_MIN_FEATURES}, where the default is the lanes kernels):")
    found = False
    for (op, variant), cases in sorted(ratios.items()):
        f32 = [r for shape, dtype, r in cases if dtype == "float32" and n_features(shape) >= LANES_MIN_FEATURES]
        if f32 and all(r < 1 - args.threshold for r in f32):
            found = True
            print(f"- {op} [{variant}]: {', '.join(f'{r:.2f}' for r in f32)}")
    if not found:
        print("- none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
