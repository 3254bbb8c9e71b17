"""Static figures of the envsum CUDA kernels, no GPU needed: registers and spills per kernel (ptxas -v) and the
instruction mix of each lanes kernel's hot loop (the innermost loop around a marker instruction in the SASS).

A proxy for kernel work between GPU sessions (the lanes kernels are issue-bound: fewer instructions per pair
and fewer registers are what the GPU measurements reward), not a substitute for them.

    python tools/cuda_sass_stats.py [--arch 90] [--kernels REGEX]

Needs nvcc and cuobjdump (CUDA_HOME/bin, PATH, or the copy that ships with triton's CUDA backend).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (label, mangled-name regex, marker regex): the hot loop is the smallest loop around the first marker
SHFL_16 = r"SHFL\.BFLY PT, R\d+, R\d+, 0x10"
HOT_LOOPS = [
    ("forward lanes S<=20, 4 columns, per 4 pairs", r"forward_lanes_kernelIfLi20ELi4EE", r"LDS\.128"),
    ("backward lanes S<=20, 2 columns, per pair", r"backward_lanes_kernelIfLi20ELi2EE", SHFL_16),
]


def find_tool(name: str) -> str:
    for candidate in (shutil.which(name), os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", name)):
        if candidate and os.path.exists(candidate):
            return candidate
    try:
        import triton  # the CUDA torch wheels ship triton with its own cuobjdump

        bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    sys.exit(f"cuda_sass_stats: {name} not found (set CUDA_HOME or PATH)")


def parse_sass(text: str) -> dict[str, list[tuple[int, str]]]:
    """Function name -> [(address, instruction)] from cuobjdump -sass output."""
    functions: dict[str, list[tuple[int, str]]] = {}
    current = None
    for line in text.splitlines():
        m = re.search(r"Function : (\S+)", line)
        if m:
            current = functions.setdefault(m.group(1), [])
            continue
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
        if m and current is not None:
            current.append((int(m.group(1), 16), m.group(2).strip()))
    return functions


def hot_loop(instructions: list[tuple[int, str]], marker: str) -> list[str]:
    """The instructions of the smallest loop (a backward branch and its target) around the first marker
    instruction."""
    target = next(a for a, t in instructions if re.search(marker, t))
    best = None
    for address, text in instructions:
        m = re.search(r"BRA (0x[0-9a-f]+)", text)
        if m:
            dest = int(m.group(1), 16)
            if dest <= target <= address and (best is None or address - dest < best[1] - best[0]):
                best = (dest, address)
    if best is None:
        return []
    return [t for a, t in instructions if best[0] <= a <= best[1]]


def opcode(instruction: str) -> str:
    return re.sub(r"^@!?U?P\w+\s+", "", instruction).split()[0].split(".")[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="90", help="SM architecture (default 90)")
    parser.add_argument("--kernels", default="lanes",
                        help="regex of the kernels (mangled or demangled names) whose registers to list")
    args = parser.parse_args()
    nvcc, cuobjdump = find_tool("nvcc"), find_tool("cuobjdump")
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "envsum.cubin"
        source = str(REPO / "csrc" / "cuda" / "envsum.cu")
        build = subprocess.run([nvcc, "-std=c++17", "-O3", "-cubin", "-o", str(cubin), source, f"-I{REPO / 'csrc'}",
                                "-gencode", f"arch=compute_{args.arch},code=sm_{args.arch}", "-Xptxas", "-v"],
                               capture_output=True, text=True)
        if build.returncode != 0:
            sys.exit(build.stderr)
        sass = subprocess.run([cuobjdump, "-sass", str(cubin)], capture_output=True, text=True, check=True).stdout
    demangle = shutil.which("c++filt")

    print(f"## registers (sm_{args.arch}, ptxas -v)\n")
    print("| kernel | registers | spill bytes (stores / loads) |\n|---|---|---|")
    name, spill = None, "0 / 0"
    for line in build.stderr.splitlines():
        m = re.search(r"Compiling entry function '(\S+)'", line)
        if m:
            name = m.group(1)
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            spill = f"{m.group(1)} / {m.group(2)}"
        m = re.search(r"Used (\d+) registers", line)
        if m and name:
            pretty = name
            if demangle:
                pretty = subprocess.run([demangle, name], capture_output=True, text=True).stdout.strip()
            pretty = re.sub(r"fastdipole::cuda::\(anonymous namespace\)::", "", pretty).split("(")[0]
            if re.search(args.kernels, name) or re.search(args.kernels, pretty):
                print(f"| {pretty} | {m.group(1)} | {spill} |")
            name, spill = None, "0 / 0"

    print(f"\n## hot loops (SASS instructions, sm_{args.arch})\n")
    functions = parse_sass(sass)
    for label, pattern, marker in HOT_LOOPS:
        matches = [f for f in functions if re.search(pattern, f)]
        if not matches:
            print(f"- {label}: kernel not found")
            continue
        body = hot_loop(functions[matches[0]], marker)
        mix = collections.Counter(opcode(t) for t in body)
        top = ", ".join(f"{k} {v}" for k, v in mix.most_common(8))
        print(f"- {label}: {len(body)} instructions ({top})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
