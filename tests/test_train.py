"""Training runs: run-folder contents, charge modes, exact resume, atomic checkpoints, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fastdipole.data import element_mean_charges, load_h5, load_split, save_h5
from fastdipole.errors import DataError
from fastdipole.evaluation import evaluate
from fastdipole.train import (
    RunFolderError,
    TrainConfig,
    load_checkpoint,
    load_model,
    read_history,
    save_checkpoint,
    train,
)
from fastdipole.train.history import COLUMNS

TIME_COLUMNS = ("epoch_seconds", "elapsed_seconds")


@pytest.fixture(scope="module")
def small_h5(qm9_h5_path, tmp_path_factory):
    """300 real QM9 molecules (with Mulliken charges) in our layout."""
    path = tmp_path_factory.mktemp("data") / "qm9_300.h5"
    save_h5(load_h5(qm9_h5_path, molecules=slice(2000, 2300)), path)
    return path


def tiny(small_h5, out, **kw):
    settings = dict(data=str(small_h5), out=str(out), n_features=8, n_sensitivities=6, n_interactions=1,
                    n_atom_layers=1, epochs=2, batch_size=64, eval_batch_size=128, threads=1, device="cpu")
    settings.update(kw)
    return TrainConfig(**settings)


def quiet(_msg):
    pass


def test_train_writes_all_files_and_best_checkpoint_matches_log(small_h5, tmp_path):
    run = train(tiny(small_h5, tmp_path / "run", epochs=3), progress=False, log=quiet)
    for name in ("config.json", "split.npz", "metrics.csv", "checkpoint_last.pt", "checkpoint_best.pt", "summary.json"):
        assert (run / name).is_file(), name
    assert not list(run.glob("*.tmp"))
    assert not (run / "charge_means.json").exists()  # only in average mode

    config = json.loads((run / "config.json").read_text())
    assert config["species"] == sorted(set(load_h5(small_h5).Z.tolist())) == [1, 6, 7, 8]  # no F in this slice
    assert config["run"]["n_molecules"] == 300 and config["run"]["versions"]["torch"] == torch.__version__
    split = load_split(run / "split.npz")
    assert [len(split[k]) for k in ("train", "valid", "test")] == [240, 30, 30]

    rows = read_history(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert list(rows[0]) == list(COLUMNS)
    for r in rows:
        assert r["valid_dipole_mae_debye"] == pytest.approx(r["valid_dipole_mae_e_angstrom"] * 4.80320, rel=1e-6)
        assert r["train_charge_mae_e"] > 0 and r["valid_charge_mae_e"] > 0 and r["lr"] == pytest.approx(1e-3)

    # The best checkpoint is the epoch with the lowest logged validation MAE, and reloading it
    # reproduces that number.
    best = min(rows, key=lambda r: r["valid_dipole_mae_e_angstrom"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_epoch"] == best["epoch"] == load_checkpoint(run / "checkpoint_best.pt")["epoch"]
    ds = load_h5(small_h5)
    metrics = evaluate(load_model(run, "best"), ds, split["valid"]).metrics
    assert metrics["dipole_mae_e_angstrom"] == pytest.approx(best["valid_dipole_mae_e_angstrom"], rel=1e-5)
    last = evaluate(load_model(run, "last"), ds, split["valid"]).metrics
    assert last["dipole_mae_e_angstrom"] == pytest.approx(rows[-1]["valid_dipole_mae_e_angstrom"], rel=1e-5)


def test_random_split_keeps_the_conformers_of_a_molecule_together(qm9_h5_path, tmp_path):
    """A file with chembl_id (QMugs) is split by molecule: no chembl_id in two parts of split.npz."""
    data = load_h5(qm9_h5_path, molecules=slice(2000, 2300))
    data.extra = {"chembl_id": np.repeat([f"CHEMBL{g}" for g in range(60)], 5)}  # 60 molecules x 5 "conformers"
    path = tmp_path / "conformers.h5"
    save_h5(data, path)
    lines = []
    run = train(tiny(path, tmp_path / "run", epochs=1), progress=False, log=lines.append)
    split = load_split(run / "split.npz")
    ids = {k: set(data.extra["chembl_id"][split[k]]) for k in ("train", "valid", "test")}
    assert ids["train"] and ids["valid"] and ids["test"]
    assert not (ids["train"] & ids["valid"]) and not (ids["train"] & ids["test"]) and not (ids["valid"] & ids["test"])
    assert any("conformers grouped by chembl_id" in line for line in lines)


def test_average_mode_saves_training_means(small_h5, tmp_path):
    run = train(tiny(small_h5, tmp_path / "avg", charges="average", epochs=1), progress=False, log=quiet)
    saved = json.loads((run / "charge_means.json").read_text())
    split = load_split(run / "split.npz")
    expected = element_mean_charges(load_h5(small_h5), split["train"])
    assert saved["units"] == "e"
    assert {int(z): v for z, v in saved["means_e"].items()} == pytest.approx(expected, rel=1e-12)
    all_means = element_mean_charges(load_h5(small_h5))
    assert {int(z): v for z, v in saved["means_e"].items()} != pytest.approx(all_means, rel=1e-9)


def test_none_mode_trains_without_charge_labels(qm9_h5_path, tmp_path):
    ds = load_h5(qm9_h5_path, charges=None, molecules=slice(3000, 3200))
    path = save_h5(ds, tmp_path / "nocharges.h5")
    run = train(tiny(path, tmp_path / "none", charges="none", epochs=1), progress=False, log=quiet)
    row = read_history(run)[0]
    assert row["train_charge_mae_e"] is None and row["valid_charge_mae_e"] is None
    assert row["train_loss"] == pytest.approx(
        0.96 * (row["train_dipole_rmse_e_angstrom"] + row["train_dipole_mae_e_angstrom"]), rel=1e-6)
    with pytest.raises(DataError, match="q_mulliken"):
        train(tiny(path, tmp_path / "mull", charges="mulliken"), progress=False, log=quiet)


def _comparable(rows):
    return [[r[c] for c in COLUMNS if c not in TIME_COLUMNS] for r in rows]


def test_resume_after_interrupt_equals_uninterrupted_run(small_h5, tmp_path):
    full = train(tiny(small_h5, tmp_path / "full", epochs=3, charges="average"), progress=False, log=quiet)

    # Ctrl-C right after epoch 1 (raised from the per-epoch callback, as a signal would).
    def interrupt(row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    messages = []
    cut = tiny(small_h5, tmp_path / "cut", epochs=3, charges="average")
    with pytest.raises(KeyboardInterrupt):
        train(cut, progress=False, on_epoch=interrupt, log=messages.append)
    assert "--resume" in messages[-1] and "holds epoch 1" in messages[-1]
    assert load_checkpoint(tmp_path / "cut" / "checkpoint_last.pt")["epoch"] == 1

    train(cut, resume=True, progress=False, log=quiet)
    a, b = read_history(full), read_history(tmp_path / "cut")
    assert [r["epoch"] for r in b] == [1, 2, 3]
    np.testing.assert_allclose(np.array(_comparable(b), float), np.array(_comparable(a), float), rtol=1e-5, atol=1e-7)
    sa = load_checkpoint(full / "checkpoint_last.pt")["model"]
    sb = load_checkpoint(tmp_path / "cut" / "checkpoint_last.pt")["model"]
    for key in sa:
        torch.testing.assert_close(sb[key], sa[key], rtol=1e-5, atol=1e-6)


def test_resume_can_extend_epochs_but_not_change_the_run(small_h5, tmp_path):
    config = tiny(small_h5, tmp_path / "run", epochs=1)
    train(config, progress=False, log=quiet)
    with pytest.raises(RunFolderError, match="lr"):
        train(config.replace(lr=0.5), resume=True, progress=False, log=quiet)
    train(config.replace(epochs=2), resume=True, progress=False, log=quiet)
    assert [r["epoch"] for r in read_history(tmp_path / "run")] == [1, 2]


def test_time_budget_stops_between_epochs(small_h5, tmp_path):
    run = train(tiny(small_h5, tmp_path / "run", epochs=5, max_minutes=1e-4), progress=False, log=quiet)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_completed"] == 1 and "time budget" in summary["stop_reason"]
    assert [r["epoch"] for r in read_history(run)] == [1]
    assert load_checkpoint(run / "checkpoint_last.pt")["epoch"] == 1


def test_refuses_to_overwrite_a_run_and_to_resume_nothing(small_h5, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(RunFolderError, match="not empty"):
        train(tiny(small_h5, out), progress=False, log=quiet)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    with pytest.raises(RunFolderError, match="nothing to resume"):
        train(tiny(small_h5, tmp_path / "empty"), resume=True, progress=False, log=quiet)


def test_checkpoint_write_is_atomic(monkeypatch, tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
    path = tmp_path / "checkpoint_last.pt"
    kw = dict(model=model, optimizer=opt, scheduler=sched, best_metric=1.0, best_epoch=1, epochs_without_improvement=0)
    save_checkpoint(path, epoch=1, **kw)
    before = path.read_bytes()

    real_save = torch.save

    def failing_save(obj, f, *a, **k):
        f.write(b"partial checkpoint bytes")  # half-written file, then the disk "fills up"
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, epoch=2, **kw)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "checkpoint_best.pt", epoch=2, **kw)
    monkeypatch.setattr(torch, "save", real_save)

    assert path.read_bytes() == before  # the previous checkpoint is intact...
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_last.pt"]  # ...and nothing partial is left


def test_diverging_loss_stops_with_a_clear_error(small_h5, tmp_path):
    """An absurd learning rate sends the weights to inf: the run stops with a one-line TrainingError, not NaNs."""
    from fastdipole.train import TrainingError

    with pytest.raises(TrainingError, match=r"loss became (nan|inf) in epoch 1; try a smaller --lr"):
        train(tiny(small_h5, tmp_path / "run", lr=1e30), progress=False, log=quiet)


# ---- fastdipole's recipe: neutral charges, charge head started at the element means, direction term ----------


def test_recipe_starts_the_charge_head_at_the_training_means(small_h5, tmp_path):
    run = train(tiny(small_h5, tmp_path / "r", epochs=0, charge_init="element_means_only"), progress=False, log=quiet)
    state = load_checkpoint(run / "checkpoint_last.pt")["model"]  # epoch 0: the initial weights
    split = load_split(run / "split.npz")
    means = element_mean_charges(load_h5(small_h5), split["train"])
    species = json.loads((run / "config.json").read_text())["species"]
    assert state["charges.layers.0.weight"][0].tolist() == pytest.approx([means[z] for z in species], rel=1e-6)
    assert float(state["charges.layers.1.weight"].abs().sum()) == 0.0  # element_means_only: higher levels start at 0
    # Same seed, paper's loss: hippynn's random start, and the rest of the weights identical.
    paper = train(tiny(small_h5, tmp_path / "p", epochs=0, loss="paper"), progress=False, log=quiet)
    other = load_checkpoint(paper / "checkpoint_last.pt")["model"]
    assert state["charges.layers.0.weight"].tolist() != other["charges.layers.0.weight"].tolist()
    for key in state:
        if not key.startswith("charges."):
            assert torch.equal(state[key], other[key]), key


def test_recipe_training_is_neutral_and_logs_the_direction(small_h5, tmp_path):
    run = train(tiny(small_h5, tmp_path / "r", epochs=2, direction_weight=1.0, direction_epochs=1), progress=False,
                log=quiet)
    rows = read_history(run)
    assert rows[0]["train_direction_hinge"] is not None and rows[1]["train_direction_hinge"] is None  # epoch 1 only
    assert all(0.0 <= r["valid_direction_agreement"] <= 1.0 for r in rows)
    assert all(r["valid_total_charge_mean_abs_e"] < 1e-5 for r in rows)


def test_ions_take_their_total_charge_from_the_file(small_h5, tmp_path):
    ds = load_h5(small_h5)
    total = np.zeros(ds.n_molecules, dtype=np.int16)
    total[::7] = 1  # some cations: their label charges are shifted evenly to sum to +1 e
    ds.extra["total_charge"] = total
    counts = np.diff(ds.offsets)
    ds.charges = (ds.charges + np.repeat(total / counts, counts)).astype(np.float32)
    path = tmp_path / "ions.h5"
    save_h5(ds, path)
    run = train(tiny(path, tmp_path / "r", epochs=1), progress=False, log=quiet)
    model = load_model(run)
    result = evaluate(model, load_h5(path), np.arange(ds.n_molecules))
    pred = result.predictions
    sums = np.add.reduceat(pred.charges_pred, pred.atom_offsets[:-1])
    np.testing.assert_allclose(sums, total, atol=1e-5)
    assert result.metrics["total_charge_max_abs_e"] < 1e-5


def test_old_run_folders_load_as_they_were_trained(small_h5, tmp_path):
    """A config.json written before the recipe existed has no charge_constraint: it was the paper's head."""
    run = train(tiny(small_h5, tmp_path / "old", epochs=1, loss="paper"), progress=False, log=quiet)
    raw = json.loads((run / "config.json").read_text())
    for key in ("loss", "charge_constraint", "charge_init", "direction_weight", "direction_epochs", "direction_form"):
        raw.pop(key)
    (run / "config.json").write_text(json.dumps(raw))
    model = load_model(run)
    assert model.charge_constraint == "none"
