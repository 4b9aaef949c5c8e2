"""Stage 2, **sample**: at most N photos per container (ZIP; per emotion in an image folder),
seeded and spread over people.

The original system took "the first 5,000 files of each ZIP", which over-represents
whoever sorts first.  Here each container's photos are drawn in rounds: every
person in random order gives one random photo per round, until the cap is
reached, so a cap keeps as many people as possible and balances their counts.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

DEFAULT_CAP = 5000


def sample(index: pd.DataFrame, per_container: int | None = DEFAULT_CAP, seed: int = 0) -> pd.DataFrame:
    """Rows of ``index`` (usable ones only: ``problem`` empty), at most ``per_container`` per
    container and emotion (an AI Hub ZIP holds one emotion, so: per ZIP).

    Deterministic for a given ``seed`` and index; the result keeps the index's
    original row labels so it can be joined back.
    """
    usable = index[index["problem"].isna()] if "problem" in index else index
    if per_container is None:
        return usable.copy()
    if per_container < 1:
        raise ValueError(f"per_container must be at least 1, got {per_container}")
    rng = np.random.default_rng(seed)
    keep: list = []
    # AI Hub ZIPs hold one emotion each; an image folder holds all, so cap per folder *and* emotion
    for _key, group in usable.groupby(["container", "emotion"], sort=True, dropna=False):
        if len(group) <= per_container:
            keep.extend(group.index)
            continue
        # rank each photo within its person at random, then order people at random:
        # sorting by (rank, person order) takes one photo per person per round.
        rank = pd.Series(rng.permutation(len(group)), index=group.index).groupby(group["person"]).rank()
        people = group["person"].unique()
        order = dict(zip(people, rng.permutation(len(people))))
        key = pd.DataFrame({"rank": rank, "person": group["person"].map(order)})
        keep.extend(key.sort_values(["rank", "person"]).index[:per_container])
    return usable[usable.index.isin(keep)].copy()


def report(sampled: pd.DataFrame, index: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """What was kept: ``by_class`` (photos and people per split and emotion, with what was
    available) and ``by_person`` (photos per person per emotion)."""
    kept = sampled.groupby(["split", "emotion"]).agg(photos=("person", "size"), people=("person", "nunique"))
    if index is not None:
        ok = index[index["problem"].isna()] if "problem" in index else index
        avail = ok.groupby(["split", "emotion"]).agg(available=("person", "size"))
        kept = kept.join(avail, how="outer").fillna(0).astype(int)
    by_person = sampled.pivot_table(index="person", columns="emotion", values="name", aggfunc="size", fill_value=0)
    return {"by_class": kept, "by_person": by_person}
