"""Training of dipole models with the paper's loss (dipole magnitude + auxiliary atomic charges).

Python API: ``train(TrainConfig(...)) -> run_dir`` and ``load_model(run_dir, which="best")``.
"""

from .checkpoint import atomic_torch_save, atomic_write_json, load_checkpoint, save_checkpoint
from .config import CHARGE_MODES, DEFAULT_EPOCHS, TrainConfig
from .history import read_history
from .optim import make_optimizer
from .loss import PAPER_L1, PAPER_L2, LossTerms, batch_loss, paper_loss
from .trainer import RunFolderError, TrainingError, load_model, read_config, train

__all__ = [
    "CHARGE_MODES",
    "DEFAULT_EPOCHS",
    "PAPER_L1",
    "PAPER_L2",
    "LossTerms",
    "RunFolderError",
    "TrainConfig",
    "TrainingError",
    "atomic_torch_save",
    "atomic_write_json",
    "batch_loss",
    "load_checkpoint",
    "load_model",
    "make_optimizer",
    "paper_loss",
    "read_config",
    "read_history",
    "save_checkpoint",
    "train",
]
