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


class LiveCurves:
    """Training curves redrawn in place while a model trains (loss, accuracy, balanced accuracy, lr).

    Pass ``curves.update`` as the ``callback`` of :func:`facekit.train.fit`; outside
    a notebook it only collects the rows.
    """

    def __init__(self, title: str = "training", every: int = 5):
        self.rows: list[dict] = []
        self.title, self.every = title, every
        self._handle = None

    def update(self, row: dict) -> None:
        self.rows.append({k: v for k, v in row.items() if k != "val_proba"})
        if len(self.rows) % self.every == 0:
            self.draw()

    def figure(self):
        h = pd.DataFrame(self.rows)
        fig, axes = plt.subplots(1, 4, figsize=(15, 3.2))
        axes[0].plot(h["epoch"], h["train_loss"], label="train")
        if "val_loss" in h:
            axes[0].plot(h["epoch"], h["val_loss"], label="validation people")
        axes[1].plot(h["epoch"], h["train_acc"], label="train")
        if "val_acc" in h:
            axes[1].plot(h["epoch"], h["val_acc"], label="validation people")
        if "val_bal_acc" in h:
            axes[2].plot(h["epoch"], h["val_bal_acc"], color="tab:orange", label="validation people")
            best = int(h["best_epoch"].iloc[-1])
            axes[2].axvline(best, color="grey", ls="--", lw=1, label=f"best epoch {best}")
        axes[3].plot(h["epoch"], h["lr"], color="tab:green")
        for ax, t in zip(axes, ("loss", "accuracy", "balanced accuracy", "learning rate")):
            ax.set_title(t, fontsize=10)
            ax.set_xlabel("epoch")
        axes[0].legend(fontsize=8)
        axes[2].legend(fontsize=8)
        fig.suptitle(self.title, fontsize=10)
        fig.tight_layout()
        return fig

    def draw(self) -> None:
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            return
        if get_ipython() is None or not self.rows:
            return
        fig = self.figure()
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)
        plt.close(fig)


def show_confusion(confusion, classes, title: str = ""):
    """Confusion matrices side by side: counts and row-normalised (recall on the diagonal)."""
    import seaborn as sns

    cm = np.asarray(confusion, dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    sns.heatmap(cm, annot=True, fmt=".0f", cmap="Blues", xticklabels=classes, yticklabels=classes, ax=axes[0], cbar=False)
    sns.heatmap(norm, annot=True, fmt=".2f", cmap="Blues", vmin=0, vmax=1, xticklabels=classes, yticklabels=classes,
                ax=axes[1], cbar=False)
    for ax, t in zip(axes, ("counts", "row-normalised (recall)")):
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{title} — {t}" if title else t, fontsize=10)
    fig.tight_layout()
    return fig


def show_roc_pr(y, p_pos, title: str = "", threshold: float | None = None, predicted=None):
    """ROC and precision–recall curves with their AUCs, and the operating point at ``threshold``, or that of the
    hard predictions ``predicted`` (1 = anxious), e.g. cross-validation's, each fold at its own threshold."""
    from sklearn import metrics as skm

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    fpr, tpr, _ = skm.roc_curve(y, p_pos)
    axes[0].plot(fpr, tpr, label=f"AUC {skm.roc_auc_score(y, p_pos):.3f}")
    axes[0].plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    axes[0].set_xlabel("false positive rate")
    axes[0].set_ylabel("true positive rate (anxious recall)")
    prec, rec, _ = skm.precision_recall_curve(y, p_pos)
    axes[1].plot(rec, prec, label=f"AP {skm.average_precision_score(y, p_pos):.3f}")
    axes[1].axhline(np.mean(y), color="grey", lw=0.8, ls="--", label="chance")
    axes[1].set_xlabel("recall")
    axes[1].set_ylabel("precision")
    if threshold is not None or predicted is not None:
        y = np.asarray(y)
        pred = p_pos >= threshold if predicted is None else np.asarray(predicted).astype(bool)
        tp, fp = (pred & (y == 1)).sum(), (pred & (y == 0)).sum()
        axes[0].scatter(fp / max((y == 0).sum(), 1), tp / max((y == 1).sum(), 1), color="red", zorder=3,
                        label=(f"threshold {threshold:.2f} (chosen on validation people)" if predicted is None
                               else "each fold's threshold (chosen on its training people)"))
        axes[1].scatter(tp / max((y == 1).sum(), 1), tp / max(tp + fp, 1), color="red", zorder=3)
    for ax, t in zip(axes, ("ROC", "precision–recall")):
        ax.legend(fontsize=8, loc="lower right" if t == "ROC" else "lower left")
        ax.set_title(f"{title} — {t}" if title else t, fontsize=10)
    fig.tight_layout()
    return fig


def show_per_person(per_person: pd.DataFrame, title: str = ""):
    """Accuracy of each test person (sorted): a few people can carry a good average."""
    ax = per_person["accuracy"].sort_values().plot.bar(figsize=(min(14, 2 + 0.25 * len(per_person)), 3))
    ax.set_ylabel("accuracy")
    ax.set_xticklabels([str(p)[:8] for p in per_person["accuracy"].sort_values().index], fontsize=6)
    ax.set_title(title or "accuracy per test person", fontsize=10)
    return ax
