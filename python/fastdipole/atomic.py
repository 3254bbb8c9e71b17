"""Atomic file writes, the one implementation every module uses: a write goes to ``<name>.tmp`` in the same
folder, is flushed to disk (``fsync``) and moved into place with ``os.replace``, and the folder entry is synced;
a crash, a full disk or Ctrl-C mid-write leaves the previous file intact and no partial file behind."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .errors import WriteError


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yields the temporary path to write ``path`` through (for writers that take a file name, like h5py)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except OSError as err:  # read-only folder, full disk, ...: one line naming the file (the old one is intact)
        tmp.unlink(missing_ok=True)
        if isinstance(err, WriteError):
            raise
        reason = err.strerror or " ".join(str(err).split())
        raise WriteError(f"{path}: cannot write ({reason}); "
                         f"{'the previous version is intact' if path.exists() else 'nothing was written'}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        _fsync(path.parent)  # the rename itself survives a power cut
    except OSError:
        pass  # some file systems cannot sync a directory; the data is already on disk


def atomic_write(path, write: Callable) -> Path:
    """``write(binary_file)`` into ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            write(fh)
    return Path(path)


def atomic_write_text(text: str, path) -> Path:
    return atomic_write(path, lambda fh: fh.write(text.encode()))


def atomic_write_json(obj, path) -> Path:
    return atomic_write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", path)
