"""Rewrites csrc/cuda/* for the CPU emulator in tests/cuda_host/emu/ (no GPU needed).

    python tests/cuda_host/emulate.py OUT_DIR

Copies every file of csrc/cuda to OUT_DIR/cuda (".cu" files as ".cu.cpp"), turning each kernel launch
``name<targs><<<grid, block[, smem[, stream]]>>>(args);`` into
``emu::launch([&] { name<targs>(args); }, grid, block[, smem[, stream]]);`` and each
``extern __shared__ ... name[];`` into a pointer to the emulator's per-block dynamic shared memory.
Everything else is compiled as written, so the emulation runs the kernels' own code.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "csrc" / "cuda"
EXTERN_SHARED = re.compile(r"extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?((?:[\w:]+\s+)*?[\w:]+)\s+(\w+)\s*\[\s*\]\s*;")


def _matching(text: str, start: int, open_ch: str, close_ch: str) -> int:
    """Index just past the bracket closing the one at text[start]."""
    depth = 0
    for k in range(start, len(text)):
        if text[k] == open_ch:
            depth += 1
        elif text[k] == close_ch:
            depth -= 1
            if depth == 0:
                return k + 1
    raise ValueError(f"unbalanced {open_ch}{close_ch} from offset {start}")


def _kernel_name_start(text: str, end: int) -> int:
    """Start of `name` or `name<...>` ending at text[end - 1]."""
    k = end
    if text[k - 1] == ">":  # template arguments: walk back to the matching '<'
        depth = 0
        while True:
            k -= 1
            if text[k] == ">":
                depth += 1
            elif text[k] == "<":
                depth -= 1
                if depth == 0:
                    break
    while k > 0 and (text[k - 1].isalnum() or text[k - 1] in "_:"):
        k -= 1
    return k


def rewrite_launches(text: str) -> tuple[str, int]:
    out, pos, count = [], 0, 0
    while True:
        k = text.find("<<<", pos)
        if k < 0:
            out.append(text[pos:])
            return "".join(out), count
        name_start = _kernel_name_start(text, k)
        config_end = text.index(">>>", k)
        config = text[k + 3 : config_end]
        args_start = config_end + 3
        while text[args_start].isspace():
            args_start += 1
        if text[args_start] != "(":
            raise ValueError(f"launch without arguments near: {text[name_start:args_start + 20]!r}")
        args_end = _matching(text, args_start, "(", ")")
        name = text[name_start:k]
        args = text[args_start + 1 : args_end - 1]
        out.append(text[pos:name_start])
        out.append(f"emu::launch([&]() {{ {name}({args}); }}, {config})")
        pos = args_end
        count += 1


def main() -> int:
    out_dir = Path(sys.argv[1]) / "cuda"
    out_dir.mkdir(parents=True, exist_ok=True)
    total = 0
    for path in sorted(SRC.iterdir()):
        if path.suffix not in (".cu", ".cuh", ".h"):
            continue
        text, n = rewrite_launches(path.read_text())
        text = EXTERN_SHARED.sub(r"\1* \2 = reinterpret_cast<\1*>(emu::dynamic_shared());", text)
        name = path.name + ".cpp" if path.suffix == ".cu" else path.name
        (out_dir / name).write_text(f"// emulator copy of csrc/cuda/{path.name} (tests/cuda_host/emulate.py)\n" + text)
        total += n
    print(f"rewrote {total} kernel launches into {out_dir}")
    return 0 if total > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
