"""Loads the compiled extension ``fastdipole._C`` once; remembers why if it cannot."""

from __future__ import annotations

_error: str | None = None
_loaded = False


def _load() -> None:
    global _error, _loaded
    if _loaded or _error is not None:
        return
    try:
        import torch  # noqa: F401  (torch's libraries must be loaded before the extension)

        from .. import _C  # noqa: F401  (registers torch.ops.fastdipole.*)

        _loaded = True
    except ImportError as err:
        _error = str(err)


def extension_available() -> bool:
    """True when ``torch.ops.fastdipole`` kernels are registered."""
    _load()
    return _loaded


def extension_error() -> str | None:
    """Why the extension could not be loaded (None when it loaded)."""
    _load()
    return _error
