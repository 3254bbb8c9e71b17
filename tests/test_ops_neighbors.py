"""torch.ops.fastdipole.neighbor_pairs against the pure-PyTorch reference (exact equality of all outputs)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastdipole.ops as fops
from fastdipole.ops import reference

pytestmark = pytest.mark.skipif(not fops.extension_available(), reason=f"extension not built: {fops.extension_error()}")

CUTOFF = 6.5  # Angstrom
BRUTE_FORCE_MAX_ATOMS = 256  # csrc/cpu/neighbors.h: larger molecules take the cell-list path


def ours(R, offsets, cutoff=CUTOFF):
    import fastdipole.ops.ops  # noqa: F401  (fake impls + autograd)
    return torch.ops.fastdipole.neighbor_pairs(R, offsets, cutoff)


def assert_same_pairs(R, offsets, cutoff=CUTOFF):
    got = ours(R, offsets, cutoff)
    want = reference.neighbor_pairs(R, offsets, cutoff)
    for name, a, b in zip(("pair_first", "pair_second", "row_offsets"), got, want):
        assert a.dtype == torch.int64, name
        assert torch.equal(a, b), f"{name} differs from the reference"
    return got


def random_batch(gen: torch.Generator, sizes: list[int], dtype=torch.float32, density=0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Molecules of the given sizes at `density` atoms/A^3, atoms in random order, all in one array."""
    parts = []
    for n in sizes:
        side = max(n / density, 1.0) ** (1.0 / 3.0)
        parts.append(torch.rand((n, 3), generator=gen, dtype=torch.float64).to(dtype) * side)
    R = torch.cat(parts) if parts else torch.zeros((0, 3), dtype=dtype)
    offsets = torch.tensor([0, *np.cumsum(sizes).tolist()], dtype=torch.int64)
    return R, offsets


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=40), min_size=0, max_size=8),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
    double=st.booleans(),
    cutoff=st.floats(min_value=0.5, max_value=8.0),
)
def test_small_molecules_match_reference(sizes, seed, double, cutoff):
    R, offsets = random_batch(torch.Generator().manual_seed(seed), sizes, torch.float64 if double else torch.float32)
    assert_same_pairs(R, offsets, cutoff)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cell_list_molecule_matches_reference(dtype):
    """A 2,000-atom random molecule (cell list) between small ones, in random atom order."""
    gen = torch.Generator().manual_seed(1)
    R, offsets = random_batch(gen, [5, 2000, 1, 300, 17], dtype)
    first, _, _ = assert_same_pairs(R, offsets)
    assert first.numel() > 100_000  # dense enough to exercise many cells


def test_permuted_atoms_give_permuted_pairs():
    """Unsorted coordinates: renumbering atoms renumbers the pairs, nothing else."""
    gen = torch.Generator().manual_seed(2)
    R, offsets = random_batch(gen, [600], torch.float64)
    perm = torch.randperm(600, generator=gen)
    f0, s0, _ = assert_same_pairs(R, offsets)
    f1, s1, _ = assert_same_pairs(R[perm], offsets)
    before = set(zip(f0.tolist(), s0.tolist()))
    after = {(int(perm[i]), int(perm[j])) for i, j in zip(f1.tolist(), s1.tolist())}
    assert before == after


def test_empty_and_degenerate_inputs():
    empty = torch.zeros((0, 3))
    f, s, ro = assert_same_pairs(empty, torch.tensor([0]))  # zero molecules
    assert f.numel() == 0 and s.numel() == 0 and ro.tolist() == [0]
    assert_same_pairs(empty, torch.tensor([0, 0, 0]))  # empty molecules
    # single-atom molecules and isolated atoms: no pairs at all
    R = torch.tensor([[0.0, 0, 0], [100.0, 0, 0], [0.0, 200, 0], [0, 0, 300.0]])
    f, _, ro = assert_same_pairs(R, torch.tensor([0, 1, 2, 4]))
    assert f.numel() == 0 and ro.tolist() == [0] * 5
    # coincident atoms are pairs (r = 0 < cutoff), in both directions
    f, s, _ = assert_same_pairs(torch.zeros((3, 3)), torch.tensor([0, 3]))
    assert f.numel() == 6


@pytest.mark.parametrize("n_atoms", [30, 400])
def test_non_finite_atoms_have_no_pairs(n_atoms):
    """Brute-force and cell-list paths: NaN/inf atoms pair with nothing, as in the reference."""
    gen = torch.Generator().manual_seed(3)
    R, offsets = random_batch(gen, [n_atoms], torch.float64)
    R[3, 0] = float("nan")
    R[7, 2] = float("inf")
    f, s, _ = assert_same_pairs(R, offsets)
    assert not ((f == 3) | (s == 3) | (f == 7) | (s == 7)).any()


def test_sparse_molecule_caps_the_cells():
    """Two clusters 1e5 A apart (a cell grid at cutoff resolution would need ~1e12 cells)."""
    gen = torch.Generator().manual_seed(4)
    a, _ = random_batch(gen, [200], torch.float64)
    b, _ = random_batch(gen, [200], torch.float64)
    R = torch.cat([a, b + torch.tensor([1e5, -1e5, 3e4], dtype=torch.float64)])
    assert_same_pairs(R, torch.tensor([0, 400]))


def test_cutoff_is_strict():
    R = torch.tensor([[0.0, 0, 0], [1.5, 0, 0], [0, 0, 2.0]], dtype=torch.float64)
    f, s, _ = assert_same_pairs(R, torch.tensor([0, 3]), cutoff=1.5)
    assert list(zip(f.tolist(), s.tolist())) == []
    f, _, _ = assert_same_pairs(R, torch.tensor([0, 3]), cutoff=2.0)
    assert f.numel() == 2  # only 0 <-> 1 (r = 1.5); r = 2.0 is not < 2.0


def test_deterministic_with_two_threads():
    gen = torch.Generator().manual_seed(5)
    R, offsets = random_batch(gen, [20] * 50 + [1500] + [10] * 30)
    one = ours(R, offsets)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = [ours(R, offsets) for _ in range(3)]
    finally:
        torch.set_num_threads(previous)
    for run in two:
        for a, b in zip(one, run):
            assert torch.equal(a, b)


def test_real_qm9_molecules(qm9_h5_path):
    """First 300 QM9 molecules, float32 Angstrom coordinates as stored."""
    with h5py.File(qm9_h5_path, "r") as f:
        offsets = torch.from_numpy(f["offsets"][:301].astype(np.int64))
        R = torch.from_numpy(f["R"][: int(offsets[-1])])
    first, second, _ = assert_same_pairs(R, offsets)
    assert first.numel() > 0
    # every pair stays inside its molecule
    mol = fops.molecule_index(offsets, R.shape[0])
    assert torch.equal(mol[first], mol[second])


@pytest.mark.parametrize(
    "R, offsets, cutoff, message",
    [
        (torch.zeros((4, 2)), torch.tensor([0, 4]), 1.0, "shape"),
        (torch.zeros((4, 3), dtype=torch.int32), torch.tensor([0, 4]), 1.0, "float32 or float64"),
        (torch.zeros((4, 3)), torch.tensor([0, 3]), 1.0, "must equal the number of"),
        (torch.zeros((4, 3)), torch.tensor([1, 4]), 1.0, "must be 0"),
        (torch.zeros((4, 3)), torch.tensor([0, 3, 2, 4]), 1.0, "non-decreasing"),
        (torch.zeros((4, 3)), torch.tensor([0, 4], dtype=torch.int32), 1.0, "int64"),
        (torch.zeros((4, 3)), torch.tensor([0, 4]), 0.0, "cutoff"),
        (torch.zeros((4, 3)), torch.tensor([0, 4]), float("nan"), "cutoff"),
    ],
)
def test_bad_inputs_raise_clear_errors(R, offsets, cutoff, message):
    with pytest.raises(RuntimeError, match=message):
        ours(R, offsets, cutoff)


def test_opcheck():
    gen = torch.Generator().manual_seed(6)
    R, offsets = random_batch(gen, [7, 12, 1, 0, 9])
    torch.library.opcheck(torch.ops.fastdipole.neighbor_pairs.default, (R, offsets, 4.0))


def test_dispatch_entry_point_matches_reference():
    gen = torch.Generator().manual_seed(7)
    R, offsets = random_batch(gen, [15, 30])
    R.requires_grad_(True)  # positions may carry gradients; the pairs do not
    got = fops.neighbor_pairs(R, offsets, CUTOFF, backend="compiled")
    want = fops.neighbor_pairs(R, offsets, CUTOFF, backend="reference")
    assert all(torch.equal(a, b) for a, b in zip(got, want))
