"""Training of dipole models with the paper's loss (dipole magnitude + auxiliary atomic charges).

Python API: ``train(TrainConfig(...)) -> run_dir`` and ``load_model(run_dir, which="best")``.
"""

from .checkpoint import load_checkpoint, save_checkpoint
from .config import CHARGE_MODES, DEFAULT_EPOCHS, TrainConfig
from .history import read_history
from .loss import PAPER_L1, PAPER_L2, LossTerms, batch_loss, paper_loss
from .optim import make_optimizer
from .run_folder import RunFolderError, load_model, read_config
from .trainer import TrainingError, train

__all__ = [
    "CHARGE_MODES",
    "DEFAULT_EPOCHS",
    "PAPER_L1",
    "PAPER_L2",
    "LossTerms",
    "RunFolderError",
    "TrainConfig",
    "TrainingError",
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
