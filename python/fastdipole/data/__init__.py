"""Datasets of molecules (flat CSR arrays), their HDF5 layout, batching, splits and the Mulliken baseline.

Units: positions Angstrom, charges e, dipoles Debye in files (``mu_debye``); see LAYOUT.md.
"""

from .baseline import mulliken_point_charge_baseline, point_charge_dipoles
from .batching import Batch, BatchLoader
from .charges import average_charge_labels, element_mean_charges
from .dataset import MoleculeDataset, check_coincident_atoms, check_species, validate
from .h5io import bundled_sample_path, has_array, load_h5, save_h5
from .physics import check_physics, molecules_without_pairs
from .splits import load_split, make_split, save_split, split_indices

__all__ = [
    "Batch",
    "BatchLoader",
    "MoleculeDataset",
    "average_charge_labels",
    "bundled_sample_path",
    "check_coincident_atoms",
    "check_physics",
    "check_species",
    "element_mean_charges",
    "has_array",
    "load_h5",
    "load_split",
    "make_split",
    "molecules_without_pairs",
    "mulliken_point_charge_baseline",
    "point_charge_dipoles",
    "save_h5",
    "save_split",
    "split_indices",
    "validate",
]
