"""Train the shipped demo checkpoints on the kit's SYNTHETIC data (no real person, freely redistributable).

    .venv/bin/python tools/train_demo_weights.py

Writes weights/demo_binary.pt (plain protocol) and weights/demo_binary_personal.pt
(personal-neutral protocol, for the live demo's Calibrate button), using exactly the
code path of notebooks 03-04: the synthetic index's Training/Validation folders,
the official split done right (people in both removed from the test set),
validation people for early stopping and the threshold.  Prints test metrics
for weights/README.md.
"""
import json
import sys

import torch

from facekit import checkpoint, synthetic
from facekit.crossval import Protocol, prepare
from facekit.experiment import checkpoint_meta, evaluate_on_split, fit_on_split, public, roles_for
from facekit.model import ModelConfig
from facekit.paths import weights_dir
from facekit.train import TrainConfig

torch.set_num_threads(1)
table, landmarks = synthetic.make_dataset(n_people=120, photos_per_emotion=8, seed=0)
role, info = roles_for(table, seed=0)
source = "SYNTHETIC demo data (facekit.synthetic.make_dataset(120, 8, seed=0); no real person)"
results = {}
for name, calibration in (("demo_binary", "none"), ("demo_binary_personal", "personal-neutral")):
    data = prepare(table, landmarks, Protocol(calibration=calibration))
    tc = TrainConfig(seed=0)
    fitted = fit_on_split(data, role, "resnet-mlp", ModelConfig(), tc)
    test = public(evaluate_on_split(data, role, fitted))
    meta = checkpoint_meta(data, table, role, info, fitted, tc, source)
    meta["metrics"]["test"] = {k: test[k] for k in ("n", "n_test_people", "accuracy", "balanced_accuracy",
                                                     "balanced_accuracy_ci95", "auc", "recall")}
    path = checkpoint.save(weights_dir() / f"{name}.pt", fitted.model, meta)
    results[name] = meta["metrics"]["test"] | {"epoch": fitted.selected["epoch"], "threshold": fitted.threshold}
    print(path, json.dumps(results[name], indent=1, default=float), file=sys.stderr)
print(json.dumps({"split": info, **results}, indent=1, default=float))
