"""Exceptions raised by fastdipole for bad user input.

Every message is one line that names what is wrong and where (file, array,
molecule index), so a user can fix their data without reading a traceback.
"""


class FastDipoleError(Exception):
    """Base class of every error fastdipole raises on purpose."""


class DataError(FastDipoleError, ValueError):
    """A data file or in-memory dataset is malformed (missing array, NaN, bad offsets, ...)."""


class ModelInputError(FastDipoleError, ValueError):
    """Inputs handed to a model are inconsistent with it (unknown element, coincident atoms, ...)."""


class WriteError(FastDipoleError, OSError):
    """A file could not be written (read-only folder, full disk, ...); the previous version of it is intact."""
