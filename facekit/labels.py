"""Emotion vocabulary, class sets and label policies.

The kit's canonical emotion names are the seven AI Hub ones (Korean, as in the
download); every other source maps its labels onto them.  A *class set* picks
which emotions a task uses and how they are called in plots and reports.
A *label policy* says whose opinion is the label: the uploader's (the emotion in
the file name), a majority of the three annotators, or all three.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

#: The seven AI Hub emotions and their English names.
EMOTIONS = {
    "기쁨": "happy",
    "당황": "embarrassed",
    "분노": "angry",
    "불안": "anxious",
    "상처": "hurt",
    "슬픔": "sad",
    "중립": "neutral",
}
_FROM_ENGLISH = {en: ko for ko, en in EMOTIONS.items()}
# Common names used by other datasets for the same expressions.
_FROM_ENGLISH.update({"fear": "불안", "afraid": "불안", "happiness": "기쁨", "joy": "기쁨",
                      "surprise": "당황", "surprised": "당황", "anger": "분노", "disgust": "상처",
                      "sadness": "슬픔", "neutrality": "중립"})

POLICIES = ("uploader", "majority", "unanimous")
ANNOTATORS = ("annot_A", "annot_B", "annot_C")


def to_emotion(name: str) -> str:
    """Map an English or Korean emotion name to the kit's canonical (AI Hub) name."""
    key = str(name).strip()
    if key in EMOTIONS:
        return key
    ko = _FROM_ENGLISH.get(key.lower())
    if ko is None:
        raise ValueError(f"unknown emotion {name!r}; use one of {sorted(EMOTIONS)} "
                         f"or {sorted(_FROM_ENGLISH)}")
    return ko


@dataclass(frozen=True)
class ClassSet:
    """Which emotions a task uses, in class-index order.

    ``ClassSet()`` is the default binary task 중립 (neutral) vs 불안 (anxious);
    ``ClassSet.all()`` is the seven-class task.
    """

    emotions: tuple[str, ...] = ("중립", "불안")

    @classmethod
    def all(cls) -> "ClassSet":
        return cls(tuple(EMOTIONS))

    @property
    def names(self) -> tuple[str, ...]:
        """English names, for plots and reports."""
        return tuple(EMOTIONS[e] for e in self.emotions)

    def encode(self, emotion: pd.Series) -> np.ndarray:
        """Class index per row, ``-1`` where the emotion is not in this set or missing."""
        lookup = {e: i for i, e in enumerate(self.emotions)}
        return emotion.map(lookup).fillna(-1).astype(np.int64).to_numpy()


def apply_policy(index: pd.DataFrame, policy: str = "uploader") -> pd.Series:
    """The label of each photo under ``policy``; missing (``NaN``) where the policy gives none.

    - ``uploader``: the emotion in the file name (the ZIP it came in).
    - ``majority``: the emotion at least two of the three annotators gave.
    - ``unanimous``: the emotion all three annotators gave.
    Sources without annotator votes only support ``uploader``.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown label policy {policy!r}; choose one of {POLICIES}")
    if policy == "uploader":
        return index["emotion"].rename("label")
    missing = [a for a in ANNOTATORS if a not in index.columns]
    if missing:
        raise ValueError(f"label policy {policy!r} needs annotator votes ({', '.join(missing)} missing): "
                         "this source has only one label per photo, use policy='uploader'")
    votes = index[list(ANNOTATORS)]
    need = 2 if policy == "majority" else 3
    out = pd.Series(np.nan, index=index.index, dtype=object, name="label")
    for emotion in EMOTIONS:
        hits = (votes == emotion).sum(axis=1)
        out[hits >= need] = emotion
    return out


def agreement_table(index: pd.DataFrame) -> pd.DataFrame:
    """Per uploader emotion: photos, and the share whose label survives each policy unchanged."""
    rows = []
    for emotion, group in index.dropna(subset=["emotion"]).groupby("emotion"):
        row = {"emotion": emotion, "english": EMOTIONS.get(emotion, emotion), "photos": len(group)}
        if all(a in group.columns for a in ANNOTATORS):
            has_votes = group[list(ANNOTATORS)].notna().all(axis=1)
            row["with_votes"] = int(has_votes.sum())
            for policy in ("majority", "unanimous"):
                agreed = apply_policy(group[has_votes], policy) == emotion
                row[f"{policy}_agrees"] = float(agreed.mean()) if has_votes.any() else np.nan
        rows.append(row)
    return pd.DataFrame(rows).set_index("emotion")


#: The three tasks: the original's neutral vs anxious, anxious against every other
#: emotion present (neutral included), and all seven emotions.
TASKS = ("binary", "anxious-vs-rest", "7class")


def task_classes(task: str) -> tuple[str, ...]:
    """English class names of a task, in class-index order (the positive class last for binary tasks)."""
    if task == "binary":
        return ("neutral", "anxious")
    if task == "anxious-vs-rest":
        return ("rest", "anxious")
    if task == "7class":
        return tuple(EMOTIONS.values())
    raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")


def encode_task(label: pd.Series, task: str) -> np.ndarray:
    """Class index per row for ``task`` (``-1`` where the row is not part of the task).

    ``label`` holds canonical emotion names after a label policy (NaN = no label).
    In ``binary`` only 중립 and 불안 count; ``anxious-vs-rest`` puts 불안 against every
    other emotion; ``7class`` uses all seven.
    """
    task_classes(task)
    if task == "binary":
        return ClassSet().encode(label)
    if task == "anxious-vs-rest":
        y = np.where(label == "불안", 1, 0)
        return np.where(label.isna().to_numpy(), -1, y).astype(np.int64)
    return ClassSet.all().encode(label)
