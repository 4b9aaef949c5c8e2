"""Stage 5, **split by person**: no person is ever on both sides of a split.

- :func:`official_split`: the AI Hub way done right. Test = the official
  Validation folder *minus every person who also appears in Training*;
  training and validation (model selection) people are drawn from Training by
  person.
- :func:`person_split`: train / validation / test by person for any source.
- :func:`person_folds`: leave-one-person-out or K folds by person, for cross-validation.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, GroupShuffleSplit, LeaveOneGroupOut

from .index import shared_people


def _draw_people(groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of rows whose person is in a random ``fraction`` of the people (at least one)."""
    people = np.unique(groups)
    if len(people) < 2:
        raise ValueError(f"need at least 2 people to split by person, got {len(people)}")
    n = min(len(people) - 1, max(1, int(round(len(people) * fraction))))
    gss = GroupShuffleSplit(n_splits=1, test_size=n, random_state=seed)
    _, picked = next(gss.split(np.zeros(len(groups)), groups=groups))
    mask = np.zeros(len(groups), bool)
    mask[picked] = True
    return mask


def person_split(groups, val_fraction: float = 0.15, test_fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """``"train"``, ``"val"`` or ``"test"`` per row, drawn by person (``groups``: person per row)."""
    groups = np.asarray(groups)
    out = np.full(len(groups), "train", dtype=object)
    if test_fraction > 0:
        out[_draw_people(groups, test_fraction, seed)] = "test"
    rest = out == "train"
    if val_fraction > 0:
        sub = _draw_people(groups[rest], val_fraction / max(1e-9, 1 - test_fraction), seed + 1)
        out[np.flatnonzero(rest)[sub]] = "val"
    return out


def official_split(table: pd.DataFrame, val_fraction: float = 0.15, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Split an index with Training/Validation folders: (role per row, summary).

    Test is the official Validation folder without the people who are also in
    Training; validation people (early stopping, thresholds, every choice) are
    drawn from Training by person; the rest of Training trains.  The summary says
    how many people and photos were removed from the test set.
    """
    leaked = shared_people(table)
    # rows the index marks with a problem (e.g. Thumbs.db, no person) take no role
    usable = table["person"].notna().to_numpy().copy()
    if "problem" in table:
        usable &= table["problem"].isna().to_numpy()
    split = table["split"].to_numpy()
    person = table["person"].to_numpy()
    role = np.full(len(table), "excluded", dtype=object)
    test = (split == "Validation") & usable & ~np.isin(person, list(leaked))
    role[test] = "test"
    train = (split == "Training") & usable
    if train.sum():
        val = _draw_people(person[train], val_fraction, seed)
        role[np.flatnonzero(train)[val]] = "val"
        role[np.flatnonzero(train)[~val]] = "train"
    removed = (split == "Validation") & np.isin(person, list(leaked))
    info = {"protocol": "official Validation folder minus people also in Training; val people drawn from Training",
            "people_in_both": len(leaked), "test_photos_removed": int(removed.sum())}
    for r in ("train", "val", "test"):
        info[f"{r}_people"] = int(pd.Series(person[role == r]).nunique())
        info[f"{r}_photos"] = int((role == r).sum())
    return role, info


def person_folds(groups, folds="loso", seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, test rows) per fold; ``folds`` is ``"loso"`` (leave one person out) or a number K."""
    groups = np.asarray(groups)
    x = np.zeros(len(groups))
    if str(folds).lower() == "loso":
        return list(LeaveOneGroupOut().split(x, groups=groups))
    k = int(folds)
    n_people = len(np.unique(groups))
    if not 2 <= k <= n_people:
        raise ValueError(f"--folds {k}: need between 2 and {n_people} (the number of people)")
    # shuffle people first: GroupKFold alone is deterministic by group size
    rng = np.random.default_rng(seed)
    people = np.unique(groups)
    relabel = dict(zip(people, rng.permutation(len(people))))
    return list(GroupKFold(n_splits=k).split(x, groups=np.array([relabel[g] for g in groups])))
