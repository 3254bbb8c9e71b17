"""fastdipole: fast HIP-NN molecular dipole models trained with an auxiliary atomic-charge loss.

Units: positions Angstrom, charges e, dipoles e*Angstrom (1 e*Angstrom = 4.80320 Debye).
"""

from . import nn, ops
from .errors import DataError, FastDipoleError, ModelInputError
from .nn import HIPNN, ChargeHead, DipoleModel
from .pretrained import pretrained
from .units import DEBYE_PER_E_ANGSTROM

__version__ = "0.1.0"

__all__ = [
    "nn",
    "ops",
    "HIPNN",
    "ChargeHead",
    "DipoleModel",
    "DataError",
    "FastDipoleError",
    "ModelInputError",
    "DEBYE_PER_E_ANGSTROM",
    "pretrained",
]
