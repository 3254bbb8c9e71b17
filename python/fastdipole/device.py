"""The torch device a command or training runs on."""

from __future__ import annotations

import torch

#: Device choices of TrainConfig and every command's ``--device``.
DEVICES = ("cpu", "cuda", "auto")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto``/None -> cuda when torch sees a GPU, else cpu."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
