"""Generate the QMugs-style SDF test fixture in ``tests/fixtures/qmugs/`` (GFN2-xTB labels from tblite).

Real QMugs cannot be downloaded in the development sandbox, so the converter
(``fastdipole data qmugs``) is tested on small drug-like molecules labelled here with the same
semi-empirical method QMugs uses for its ``GFN2:`` fields. What this script does:

1. 3D structures from the SMILES below with RDKit: ETKDG embedding (fixed random seed) and MMFF94
   optimisation, 1-3 conformers per molecule, each translated to its centre of mass.
   (QMugs geometries are GFN2-xTB-optimised; ours are MMFF geometries. The labels are computed
   for exactly the geometry written, so labels and geometry are consistent.)
2. A GFN2-xTB single point per conformer with ``tblite`` (``pip install tblite rdkit``):
   Mulliken partial charges (e) and the dipole moment vector (e*Bohr -> Debye). The script checks
   that tblite's ``charges`` equal Mulliken charges recomputed from its density and overlap matrices.
3. QMugs-style SDFs with the properties ``CHEMBL_ID``, ``CONF_ID``, ``GFN2:MULLIKEN_CHARGES``
   (``|``-joined, atom order, e) and ``GFN2:DIPOLE`` (``x|y|z|total``, Debye): one file per
   conformer in ``CHEMBL<id>/conf_NN.sdf`` for most molecules, and one multi-molecule SDF
   (``multi/extra_molecules.sdf``) for the last few. No ``DFT:`` fields: those numbers cannot be
   computed here and are never invented.

The ids ``CHEMBL99000NN`` look like ChEMBL ids but are made up (beyond the ChEMBL id range in use);
they are not QMugs or ChEMBL records.

Run from the repository root::

    OMP_NUM_THREADS=1 python tools/make_qmugs_fixture.py            # writes tests/fixtures/qmugs/
    OMP_NUM_THREADS=1 python tools/make_qmugs_fixture.py --out DIR
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from rdkit import Chem
from rdkit.Chem import AllChem

#: 1 Bohr in Angstrom (CODATA 2018), to hand tblite positions in Bohr.
BOHR_IN_ANGSTROM = 0.529177210903
#: 1 e*Bohr in Debye (tblite reports dipoles in e*Bohr).
DEBYE_PER_E_BOHR = 2.541746

#: Valence electrons of the neutral atoms in GFN2-xTB's minimal valence basis (for the Mulliken check).
VALENCE_ELECTRONS = {1: 1, 6: 4, 7: 5, 8: 6, 9: 7, 15: 5, 16: 6, 17: 7, 35: 7, 53: 7}

#: (name, SMILES, number of conformers). Small drug-like molecules (<= 40 atoms with hydrogens)
#: covering H C N O F P S Cl Br I, plus two ions (choline, benzoate) for non-zero total charge.
MOLECULES = [
    ("aspirin", "CC(=O)Oc1ccccc1C(=O)O", 3),
    ("paracetamol", "CC(=O)Nc1ccc(O)cc1", 2),
    ("caffeine", "Cn1cnc2c1c(=O)n(C)c(=O)n2C", 1),
    ("ibuprofen", "CC(C)Cc1ccc(cc1)C(C)C(=O)O", 3),
    ("sulfanilamide", "Nc1ccc(cc1)S(N)(=O)=O", 2),
    ("chlorobenzene", "Clc1ccccc1", 1),
    ("1,4-dichlorobenzene", "Clc1ccc(Cl)cc1", 1),
    ("4-bromophenol", "Oc1ccc(Br)cc1", 1),
    ("4-iodoanisole", "COc1ccc(I)cc1", 2),
    ("5-fluorouracil", "O=c1[nH]cc(F)c(=O)[nH]1", 1),
    ("trimethyl phosphate", "COP(=O)(OC)OC", 2),
    ("dimethyl methylphosphonate", "CP(=O)(OC)OC", 2),
    ("metformin", "CN(C)C(=N)NC(=N)N", 2),
    ("nicotine", "CN1CCCC1c1cccnc1", 2),
    ("acetazolamide", "CC(=O)Nc1nnc(s1)S(N)(=O)=O", 2),
    ("methionine", "CSCCC(N)C(=O)O", 3),
    ("chlorzoxazone", "O=c1[nH]c2cc(Cl)ccc2o1", 1),
    ("isoniazid", "NNC(=O)c1ccncc1", 2),
    ("lidocaine", "CCN(CC)CC(=O)Nc1c(C)cccc1C", 3),
    ("metronidazole", "Cc1ncc([N+](=O)[O-])n1CCO", 2),
    ("ethionamide", "CCc1cc(C(N)=S)ccn1", 2),
    ("4-bromoacetanilide", "CC(=O)Nc1ccc(Br)cc1", 2),
    ("2-iodobenzoic acid", "OC(=O)c1ccccc1I", 2),
    ("fosfomycin", "C[C@@H]1O[C@@H]1P(=O)(O)O", 1),
    ("captopril", "C[C@H](CS)C(=O)N1CCC[C@H]1C(=O)O", 3),
    ("sulfamethoxazole", "Cc1cc(NS(=O)(=O)c2ccc(N)cc2)no1", 2),
    ("propylthiouracil", "CCCc1cc(=O)[nH]c(=S)[nH]1", 2),
    ("5-bromouracil", "O=c1[nH]cc(Br)c(=O)[nH]1", 1),
    ("valproic acid", "CCCC(CCC)C(=O)O", 3),
    ("theophylline", "Cn1c2nc[nH]c2c(=O)n(C)c1=O", 1),
    ("salicylic acid", "OC(=O)c1ccccc1O", 1),
    ("4-fluorobenzenesulfonamide", "NS(=O)(=O)c1ccc(F)cc1", 1),
    ("2-chloropyridine", "Clc1ccccn1", 1),
    # Written to the multi-molecule SDF (the last MULTI_FILE_COUNT entries):
    ("choline (cation)", "C[N+](C)(C)CCO", 2),
    ("benzoate (anion)", "[O-]C(=O)c1ccccc1", 1),
    ("thiophene-2-carboxylic acid", "OC(=O)c1cccs1", 1),
    ("triethyl phosphate", "CCOP(=O)(OCC)OCC", 2),
    ("trifluoperazine fragment", "FC(F)(F)c1ccc2Sc3ccccc3Nc2c1", 1),
]

#: How many of the last MOLECULES go to the multi-molecule SDF instead of per-conformer files.
MULTI_FILE_COUNT = 5
FIRST_ID = 9900001
RANDOM_SEED = 20240611


def embed_conformers(smiles: str, n_conf: int, seed: int) -> Chem.Mol:
    """RDKit molecule with explicit hydrogens and up to ``n_conf`` MMFF-optimised conformers (Angstrom)."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    params.pruneRmsThresh = 0.3  # drop near-duplicate conformers
    # Embed a few extra and keep the first n_conf that survive pruning.
    conf_ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=n_conf + 2, params=params))
    if not conf_ids:
        raise RuntimeError(f"embedding failed for {smiles}")
    AllChem.MMFFOptimizeMoleculeConfs(mol, maxIters=2000)
    for cid in conf_ids[n_conf:]:
        mol.RemoveConformer(cid)
    return mol


def centre_of_mass_frame(mol: Chem.Mol, positions: np.ndarray) -> np.ndarray:
    """Positions (Angstrom) translated so the centre of mass is the origin (the dipole origin of ions)."""
    masses = np.array([a.GetMass() for a in mol.GetAtoms()])
    return positions - (masses[:, None] * positions).sum(0) / masses.sum()


def gfn2_labels(numbers: np.ndarray, positions_angstrom: np.ndarray, charge: int):
    """GFN2-xTB Mulliken charges (e) and dipole vector (Debye) from tblite; checks the charges are Mulliken."""
    from tblite.interface import Calculator

    calc = Calculator("GFN2-xTB", numbers, positions_angstrom / BOHR_IN_ANGSTROM, charge=float(charge))
    calc.set("verbosity", 0)
    calc.set("save-integrals", 1)  # keep the overlap matrix for the Mulliken check below
    res = calc.singlepoint()
    charges = np.asarray(res.get("charges"), dtype=np.float64)
    dipole_debye = np.asarray(res.get("dipole"), dtype=np.float64) * DEBYE_PER_E_BOHR

    # tblite's "charges" are Mulliken charges: q_A = Z_A(valence) - sum_{mu on A} (P S)_{mu mu}.
    P, S = res.get("density-matrix"), res.get("overlap-matrix")
    ao_atom = np.asarray(calc.get("shell-map"))[np.asarray(calc.get("orbital-map"))]
    gross = np.bincount(ao_atom, weights=np.einsum("ij,ji->i", P, S), minlength=len(numbers))
    mulliken = np.array([VALENCE_ELECTRONS[int(z)] for z in numbers]) - gross
    if not np.allclose(mulliken, charges, atol=1e-8):
        raise RuntimeError("tblite charges differ from Mulliken charges recomputed from P and S")
    if abs(charges.sum() - charge) > 1e-6:
        raise RuntimeError(f"Mulliken charges sum to {charges.sum()}, expected {charge}")
    return charges, dipole_debye


def labelled_records(seed: int):
    """Yield (name, chembl_id, conf_index, RDKit molecule with one conformer and QMugs-style properties)."""
    for i, (name, smiles, n_conf) in enumerate(MOLECULES):
        chembl_id = f"CHEMBL{FIRST_ID + i}"
        mol = embed_conformers(smiles, n_conf, seed + i)
        total_charge = Chem.GetFormalCharge(mol)
        numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
        for k, conf in enumerate(mol.GetConformers()):
            pos = centre_of_mass_frame(mol, np.array(conf.GetPositions()))
            # Round to the 4 decimals the SDF stores, so labels belong to the written geometry.
            pos = np.round(pos, 4)
            charges, dip = gfn2_labels(numbers, pos, total_charge)
            single = Chem.Mol(mol, confId=conf.GetId())
            single.RemoveAllConformers()
            c = Chem.Conformer(mol.GetNumAtoms())
            for a, xyz in enumerate(pos):
                c.SetAtomPosition(a, xyz.tolist())
            single.AddConformer(c, assignId=True)
            single.SetProp("_Name", chembl_id)
            single.SetProp("CHEMBL_ID", chembl_id)
            single.SetProp("CONF_ID", f"conf_{k:02d}")
            single.SetProp("GFN2:MULLIKEN_CHARGES", "|".join(f"{q:.6f}" for q in charges))
            # Round components first so |(x, y, z)| matches the written total to the last digit.
            dip = np.round(dip, 5)
            single.SetProp("GFN2:DIPOLE", "|".join(f"{v:.5f}" for v in (*dip, np.linalg.norm(dip))))
            yield name, chembl_id, k, single


def write_fixture(out_dir: Path, seed: int = RANDOM_SEED) -> None:
    if out_dir.exists():
        for child in out_dir.iterdir():  # keep README.md; regenerate every SDF
            if child.is_dir():
                shutil.rmtree(child)
            elif child.suffix == ".sdf":
                child.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    multi_names = {name for name, _, _ in MOLECULES[-MULTI_FILE_COUNT:]}
    multi_path = out_dir / "multi" / "extra_molecules.sdf"
    multi_path.parent.mkdir(exist_ok=True)
    n_conf = 0
    with Chem.SDWriter(str(multi_path)) as multi:
        for name, chembl_id, k, mol in labelled_records(seed):
            n_conf += 1
            if name in multi_names:
                multi.write(mol)
                continue
            path = out_dir / chembl_id / f"conf_{k:02d}.sdf"
            path.parent.mkdir(exist_ok=True)
            with Chem.SDWriter(str(path)) as w:
                w.write(mol)
            print(f"{path.relative_to(out_dir)}  {name}")
    total = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    print(f"wrote {n_conf} conformers of {len(MOLECULES)} molecules to {out_dir} ({total / 1024:.0f} KiB)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "qmugs"
    parser.add_argument("--out", type=Path, default=default, help=f"output folder (default {default})")
    parser.add_argument("--seed", type=int, default=RANDOM_SEED, help="RDKit ETKDG random seed")
    args = parser.parse_args()
    write_fixture(args.out, args.seed)


if __name__ == "__main__":
    main()
