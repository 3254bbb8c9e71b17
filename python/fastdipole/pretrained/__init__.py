"""Models shipped with the package, each a slim run folder (``config.json`` + ``checkpoint_best.pt`` holding only
the weights, ``metrics.json`` with its test metrics) under ``fastdipole/pretrained/<name>/``.

``qm9``: HIP-NN (nf = 60) trained with fastdipole's default recipe on QM9 (B3LYP/6-31G(2df,p) dipoles and
Mulliken charges; 110,000 training / 10,000 validation molecules, the rest for the test metrics). Good for
neutral (or charged, with the total charge given) organic molecules of H, C, N, O and F near their equilibrium
geometry, QM9's chemistry: other elements are refused by name, and far-from-equilibrium or much larger
molecules are extrapolation. How it was made: ``tools/make_pretrained.py`` and the README.
"""

from __future__ import annotations

from pathlib import Path

#: Names of the shipped models.
PRETRAINED = ("qm9",)
_HERE = Path(__file__).resolve().parent


def pretrained_dir(name: str) -> Path:
    """The run folder of shipped model ``name``."""
    if name not in PRETRAINED:
        raise ValueError(f"no pretrained model {name!r}; shipped: {', '.join(PRETRAINED)}")
    return _HERE / name


def resolve_model(model) -> Path:
    """A ``--model`` argument as a run folder: an existing folder, else the name of a shipped model."""
    path = Path(model)
    if path.is_dir() or str(model) not in PRETRAINED:
        return path
    return pretrained_dir(str(model))


def pretrained(name: str = "qm9", device="cpu", backend: str = "auto"):
    """The shipped :class:`~fastdipole.nn.DipoleModel` ``name``, in eval mode."""
    from ..train.run_folder import load_model

    return load_model(pretrained_dir(name), "best", device=device, backend=backend)
