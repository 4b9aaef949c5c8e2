"""Which expression measures (facekit.measures) fear moves, and how consistently, in each data set (TRAINING_DETAIL
section 7 item 26): for each measure, the fear-minus-neutral difference of the means in pooled standard deviations
(Cohen's d), and the share of the people with both classes whose own mean difference has the sign of the average.
A description of the data, not a result: nothing is fitted or chosen.

    .venv/bin/python tools/measure_effects.py ../shared/datasets/jaffe ../shared/datasets/ckplus
"""
import sys
from pathlib import Path

import numpy as np

from facekit import extract as ex
from facekit.crossval import Protocol, prepare
from facekit.measures import MEASURES
from facekit.sample import sample
from facekit.sources import load_index

columns = []
for root in sys.argv[1:] or ["../shared/datasets/jaffe", "../shared/datasets/ckplus"]:
    table, landmarks = ex.extract(sample(load_index(root), per_container=None, seed=0))
    data = prepare(table, landmarks, Protocol(task="binary", features="measures"))
    X, y, g = data.X.astype(np.float64), data.y, data.groups
    d = (X[y == 1].mean(0) - X[y == 0].mean(0)) / np.sqrt((X[y == 1].var(0) + X[y == 0].var(0)) / 2)
    people = [p for p in np.unique(g) if (y[g == p] == 1).any() and (y[g == p] == 0).any()]
    own = np.stack([X[(g == p) & (y == 1)].mean(0) - X[(g == p) & (y == 0)].mean(0) for p in people])
    agree = (np.sign(own) == np.sign(own.mean(0))).mean(0)
    columns.append((Path(root).name, len(people), d, agree))
print("| measure | " + " | ".join(f"{n}: d | {n}: share of its {k} people agreeing" for n, k, _, _ in columns) + " |")
print("|---|" + "---|---|" * len(columns))
for i, name in enumerate(MEASURES):
    print(f"| {name} | " + " | ".join(f"{d[i]:+.2f} | {a[i]:.2f}" for _, _, d, a in columns) + " |")
