"""Figures the notebooks show, kept here so every notebook draws them the same way.

Every figure made from synthetic data says so in its title (see :func:`data_label`).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .labels import EMOTIONS


def data_label(index: pd.DataFrame) -> str:
    """A short description of where rows come from, for titles: synthetic data is always named so."""
    sources = set(index["source"].dropna()) if "source" in index else set()
    if sources == {"synthetic"}:
        return "SYNTHETIC demo data (generated landmarks, not real people)"
    return ", ".join(sorted(sources)) or "unknown source"


def _contours():
    import mediapipe as mp

    fm = mp.solutions.face_mesh
    return sorted(fm.FACEMESH_CONTOURS | fm.FACEMESH_IRISES)


def draw_mesh(ax, points: np.ndarray, color="tab:cyan", lw=0.8, dots=True, label=None):
    """Draw FaceMesh contours (eyes, brows, lips, face oval, irises) of one face in 2-D (x, y)."""
    for k, (a, b) in enumerate(_contours()):
        ax.plot(points[[a, b], 0], points[[a, b], 1], color=color, lw=lw, label=label if k == 0 else None)
    if dots:
        ax.scatter(points[:, 0], points[:, 1], s=0.6, color=color, alpha=0.6)


def show_landmarks_on_photo(rgb: np.ndarray, landmarks: np.ndarray, title: str = "", ax=None):
    """The photo with its (478, 3) pixel-unit landmarks drawn over it."""
    ax = ax or plt.subplots(figsize=(6, 6))[1]
    ax.imshow(rgb)
    draw_mesh(ax, landmarks)
    ax.scatter(*landmarks[1, :2], s=40, color="red", zorder=3, label="nose tip (landmark 1)")
    ax.set_title(title or f"FaceMesh: {len(landmarks)} landmarks, pixel units")
    ax.legend(loc="lower right", fontsize=8)
    ax.axis("off")
    return ax


def show_normalised(shape: np.ndarray, title: str = "normalised face", axes=None, color="tab:blue", label=None):
    """Front (x, y) and side (z, y) views of one normalised (478, 3) face; y points down as in photos."""
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(9, 4.5), gridspec_kw={"width_ratios": [1, 0.75]})
    draw_mesh(axes[0], shape[:, [0, 1]], color=color, label=label)
    draw_mesh(axes[1], shape[:, [2, 1]], color=color, dots=False)
    for ax, (xl, yl), sub in zip(axes, (("x", "y"), ("z (depth)", "y")), ("front", "side")):
        ax.set_aspect("equal")
        ax.invert_yaxis() if not ax.yaxis_inverted() else None
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_title(f"{title} ({sub})", fontsize=10)
        ax.axhline(0, color="grey", lw=0.4)
        ax.axvline(0, color="grey", lw=0.4)
    return axes


def show_counts(index: pd.DataFrame, title: str | None = None):
    """Usable photos per emotion and split (bars), and people per emotion and split (table returned)."""
    ok = index[index["problem"].isna()]
    photos = ok.pivot_table(index="emotion", columns="split", values="person", aggfunc="size", fill_value=0)
    people = ok.pivot_table(index="emotion", columns="split", values="person", aggfunc="nunique", fill_value=0)
    photos.index = [EMOTIONS.get(e, e) for e in photos.index]  # English: default fonts lack Hangul
    ax = photos.plot.barh(figsize=(7, 3.5))
    ax.set_xlabel("photos")
    ax.set_title(title or f"Photos per emotion — {data_label(index)}", fontsize=10)
    people.index = [f"{e} {EMOTIONS.get(e, '')}" for e in people.index]
    return people.rename_axis("people per emotion")


def show_agreement(table: pd.DataFrame, title: str = ""):
    """Bar chart of the share of photos whose uploader label survives the majority / unanimous policy."""
    cols = [c for c in ("majority_agrees", "unanimous_agrees") if c in table]
    if not cols:
        return None
    data = table[cols].copy()
    data.index = list(table["english"])  # English: default fonts lack Hangul
    ax = data.plot.barh(figsize=(7, 3.5), xlim=(0, 1))
    ax.set_xlabel("share of photos whose annotators confirm the uploader's emotion")
    ax.set_title(title or "Annotator agreement per emotion", fontsize=10)
    return ax


def show_class_means(normalised: np.ndarray, labels: np.ndarray, names: tuple[str, str], title: str = "",
                     exaggerate: float = 3.0):
    """Mean face of two classes, and where the second differs from the first (arrows ×``exaggerate``)."""
    a = np.nanmean(normalised[labels == 0], axis=0)
    b = np.nanmean(normalised[labels == 1], axis=0)
    fig, ax = plt.subplots(figsize=(6, 6.5))
    draw_mesh(ax, a, color="tab:blue", dots=False, label=f"mean {names[0]}")
    draw_mesh(ax, a + exaggerate * (b - a), color="tab:red", dots=False, label=f"mean {names[1]} (difference ×{exaggerate:g})")
    step = slice(None, None, 3)
    ax.quiver(a[step, 0], a[step, 1], (b - a)[step, 0], (b - a)[step, 1], angles="xy", scale_units="xy",
              scale=1 / exaggerate, width=0.002, color="black", alpha=0.6)
    ax.set_aspect("equal")
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title or f"What changes from {names[0]} to {names[1]}", fontsize=10)
    return ax
