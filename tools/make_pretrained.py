"""Turn a finished training run into a shipped model: fastdipole/pretrained/<name>/ with config.json, a slim
checkpoint_best.pt (weights only) and metrics.json (test-split metrics of the best checkpoint).

    python tools/make_pretrained.py RUN_DIR --name qm9 [--data qm9.h5]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fastdipole.atomic import atomic_write, atomic_write_json
from fastdipole.data import load_h5, load_split
from fastdipole.evaluation import evaluate
from fastdipole.train import load_checkpoint, load_model, read_config
from fastdipole.train.checkpoint import CHECKPOINT_FORMAT
from fastdipole.train.run_folder import BEST, CONFIG_FILE, SPLIT_FILE

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--name", default="qm9")
    parser.add_argument("--data", default=None, help="the run's data file (default: as in its config.json)")
    args = parser.parse_args()
    out = REPO / "python" / "fastdipole" / "pretrained" / args.name
    out.mkdir(parents=True, exist_ok=True)
    config, raw = read_config(args.run_dir)
    best = load_checkpoint(args.run_dir / BEST)
    slim = {"format": CHECKPOINT_FORMAT, "epoch": best["epoch"], "model": best["model"]}
    atomic_write(out / BEST, lambda fh: torch.save(slim, fh))
    kept = {k: v for k, v in raw.items() if k != "run"}
    kept["run"] = {k: raw["run"][k] for k in ("species", "n_molecules", "split_sizes", "created", "versions")}
    kept["data"] = Path(config.data).name  # not a path on this machine
    kept["out"] = args.name
    atomic_write_json(kept, out / CONFIG_FILE)
    dataset = load_h5(args.data or config.data)
    test = load_split(args.run_dir / SPLIT_FILE)["test"]
    metrics = evaluate(load_model(args.run_dir), dataset, test).metrics
    metrics = {k: v for k, v in metrics.items() if k != "charge_by_element"}
    atomic_write_json({"split": "test (QM9 protocol: the molecules after 110,000 train + 10,000 valid)",
                       "best_epoch": int(best["epoch"]), **metrics}, out / "metrics.json")
    print(json.dumps(metrics, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
