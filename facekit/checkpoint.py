"""Checkpoints that carry everything needed to use them, and the predictor built from one.

A checkpoint is a ``torch.save`` of plain data: the state dict (tensors) and a
JSON-compatible ``meta`` dict, so it loads with ``torch.load(weights_only=True)``
(no pickled code runs).  ``meta`` holds the model config, class names, task,
normalisation mode and version, feature layout, decision threshold, calibration
protocol, training-data summary and validation metrics.

:class:`Predictor` is the one object every consumer uses (evaluation, the live
demo, the server): pixel-unit landmarks in, class probabilities out, through
exactly the normalisation the model was trained with.
"""
from __future__ import annotations

import pickle
import zipfile
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .calibration import CALIBRATIONS
from .labels import TASKS, task_classes
from .measures import MEASURES_NEED_ALIGNMENT, N_MEASURES, measurable, measures
from .model import FusedMLP, ModelConfig, ResNetMLP
from .normalize import MODES, NORMALISATION_VERSION, NormalizeSettings, normalize

FORMAT = "facekit-checkpoint"
FORMAT_VERSION = 1
FEATURES = ("xyz", "xy", "measures")
#: Model inputs per face for each feature set: 478 landmarks × 3 or × 2, or the 16 expression measures
#: (:mod:`facekit.measures`).
N_FEATURES = {"xyz": 478 * 3, "xy": 478 * 2, "measures": N_MEASURES}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used here; the message says what differs and what to do."""


def features(shapes: np.ndarray, kind: str = "xyz") -> np.ndarray:
    """Normalised shapes (N, 478, 3) → model input (N, F) float32: ``xyz`` (1,434), ``xy`` (956) or ``measures``
    (the 16 expression measures of :func:`facekit.measures.measures`)."""
    shapes = np.asarray(shapes, dtype=np.float32)
    if kind == "measures":
        return measures(shapes)
    if kind == "xyz":
        return shapes.reshape(len(shapes), -1)
    if kind == "xy":
        return np.ascontiguousarray(shapes[:, :, :2]).reshape(len(shapes), -1)
    raise ValueError(f"unknown feature layout {kind!r}; choose one of {FEATURES}")


def save(path: Path | str, model: ResNetMLP, meta: dict) -> Path:
    """Write ``model`` with ``meta`` (must hold ``classes``, ``task``, ``normalization``, ``features``)."""
    missing = {"classes", "task", "normalization", "features"} - set(meta)
    if missing:
        raise ValueError(f"checkpoint meta lacks {sorted(missing)}")
    meta = _plain(meta)
    problems = _layout_problems({**meta, "model_config": model.config.to_dict()})
    if problems:  # a file that every load() would refuse
        raise ValueError(f"checkpoint meta does not fit the model or this kit: {'; '.join(problems)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, "model_config": model.config.to_dict(), **meta}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"meta": full, "state_dict": state}, tmp)
    tmp.replace(path)
    return path


def _plain(value, where: str = "meta"):
    """``value`` with NumPy numbers and arrays as Python ones, checked to hold only what a safe load reads back
    (``weights_only=True``: dicts, lists, tuples, strings, numbers, booleans, None): a NumPy threshold would
    otherwise be pickled, and the file written would be refused by every later :func:`load`."""
    if isinstance(value, dict):
        return {k: _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"checkpoint {where} is a {type(value).__name__}, which a safe load cannot read back: give it "
                    "as numbers, strings, lists or dicts")


def load(path: Path | str, expect: dict | None = None, device: str = "cpu") -> "Predictor":
    """Load a checkpoint safely (``weights_only=True``) and check it against ``expect``.

    ``expect`` maps meta keys to required values, e.g. ``{"task": "binary",
    "normalization": {"mode": "kit", "align": True, "version": 1}}``; any
    difference raises :class:`CheckpointError` naming each.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; train one with notebook 03 or pick a file "
                                "in weights/")
    _check_crc(path)
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt file, or pickled code that weights_only refuses
        error = CheckpointError(f"{path} is not a loadable facekit checkpoint ({_why_unloadable(path, exc)}); "
                                "copy or download it again if it was cut off, or retrain it with notebook 03")
        # torch's own error stays chained for debugging, except a refused pickle's: it advises weights_only=False
        raise error from (None if isinstance(exc, pickle.UnpicklingError) else exc)
    meta = blob.get("meta") if isinstance(blob, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a facekit checkpoint (no facekit meta); the original system's "
                              ".pth files hold only weights: retrain with notebook 03")
    problems = _layout_problems(meta)
    if meta.get("format_version") != FORMAT_VERSION:
        problems.append(f"format_version: file {meta.get('format_version')}, this kit {FORMAT_VERSION}")
    norm = meta.get("normalization") if isinstance(meta.get("normalization"), dict) else {}
    if norm.get("version") != NORMALISATION_VERSION:
        problems.append(f"normalization version: file {norm.get('version')}, this kit {NORMALISATION_VERSION}")
    for key, want in (expect or {}).items():
        have = meta.get(key)
        if isinstance(want, dict) and isinstance(have, dict):
            for k, v in want.items():
                if have.get(k) != v:
                    problems.append(f"{key}.{k}: file {have.get(k)!r}, expected {v!r}")
        elif have != want:
            problems.append(f"{key}: file {have!r}, expected {want!r}")
    if problems:
        raise CheckpointError(f"{path} is incompatible: " + "; ".join(problems) +
                              ". Retrain with the current settings (notebook 03) or load a matching checkpoint.")
    try:
        config = ModelConfig(**meta["model_config"])
        model = ResNetMLP(config)
        model.load_state_dict(blob["state_dict"])
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path}: weights do not fit the model config in the file ({exc})") from None
    model.to(device).eval()
    return Predictor(model, meta)



def _check_crc(path: Path) -> None:
    """A ZIP checkpoint's members against their CRC-32s: ``torch.load`` does not check them, so bytes changed
    in the middle of a copy would load as other weights and score silently (a few ms for the shipped files)."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error):
        return  # not a readable ZIP: torch.load's failure is explained by _why_unloadable
    if bad is not None:
        raise CheckpointError(f"{path} is corrupt: its part {bad!r} fails its CRC check (the file changed after it "
                              "was written); copy or download it again, or retrain it with notebook 03")

def _why_unloadable(path: Path, exc: Exception) -> str:
    """Why ``torch.load`` refused ``path``, in one line: torch's own messages run to paragraphs, and the one for
    refused pickled objects suggests ``weights_only=False``, which would run any code the file holds."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return "the file is empty"
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save writes a ZIP (an old torch: a pickle)
        return f"not a PyTorch file: it starts with {head!r}"
    if head.startswith(b"PK"):
        # a ZIP's directory is at its end: a copy cut off anywhere has none
        if not zipfile.is_zipfile(path):
            return f"it is cut off or corrupt: a PyTorch ZIP of {path.stat().st_size} bytes without its end"
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError):
            return "it is corrupt: its ZIP directory cannot be read"
        if not any(n.endswith("/data.pkl") for n in names):
            return "it is a ZIP archive but not a PyTorch checkpoint (no data.pkl in it)"
    if isinstance(exc, pickle.UnpicklingError):
        return "it holds Python objects that a safe load (weights_only=True) refuses to run"
    return "it is cut off or corrupt: PyTorch cannot read its contents"


def _layout_problems(meta: dict) -> list[str]:
    """What in ``meta`` this kit cannot use: missing keys, an unknown feature layout or normalisation mode, a
    model whose inputs or outputs do not match the layout's landmarks or the class names."""
    missing = sorted({"classes", "task", "normalization", "features", "model_config"} - set(meta))
    if missing:
        return [f"meta lacks {missing}"]
    problems = []
    kind, config, classes = meta["features"], meta["model_config"], meta["classes"]
    mode = meta["normalization"].get("mode") if isinstance(meta["normalization"], dict) else None
    if mode not in MODES:
        problems.append(f"normalization mode: file {mode!r}, this kit knows {MODES}")
    if kind not in N_FEATURES:
        problems.append(f"features: file {kind!r}, this kit knows {FEATURES}")
    elif isinstance(config, dict) and config.get("n_features") != N_FEATURES[kind]:
        problems.append(f"feature layout: the model takes {config.get('n_features')} numbers per face, features "
                        f"{kind!r} give {N_FEATURES[kind]}")
    if isinstance(config, dict) and isinstance(classes, list) and config.get("n_classes") != len(classes):
        problems.append(f"classes: the model has {config.get('n_classes')} outputs for {len(classes)} class names")
    if kind == "measures" and mode in MODES and not measurable(mode, meta["normalization"].get("align", False)):
        problems.append(f"features 'measures' with normalization {meta['normalization']}: {MEASURES_NEED_ALIGNMENT}")
    if meta.get("calibration", "none") not in CALIBRATIONS:
        problems.append(f"calibration: file {meta.get('calibration')!r}, this kit knows {CALIBRATIONS}")
    # thresholds and metrics read the positive class by position (prob[:, 1]) and reports name outputs by this
    # list, so class names that are not the task's would label the outputs wrongly without any error
    task = meta["task"]
    if task not in TASKS:
        problems.append(f"task {task!r} with classes {classes}: this kit knows the tasks {TASKS}")
    elif not isinstance(classes, list) or tuple(classes) != task_classes(task):
        problems.append(f"task {task!r} has the classes {list(task_classes(task))}, the file names {classes} "
                        "(re-export it with its real task, or retrain)")
    return problems


class Predictor:
    """A trained model with the preprocessing it was trained with.

    ``predict_landmarks(landmarks, width, height)`` takes pixel-unit landmarks
    (N, 478, 3) (or one (478, 3) face) and returns probabilities (N, n_classes).
    ``reference`` (a normalised neutral face of the same person) switches on the
    personal-neutral protocol for checkpoints trained with it.
    """

    def __init__(self, model: ResNetMLP, meta: dict):
        self.model = model
        self.meta = meta
        self.classes: tuple[str, ...] = tuple(meta["classes"])
        self.task: str = meta["task"]
        norm = meta["normalization"]
        self.normalize_settings = NormalizeSettings(mode=norm["mode"], align=norm.get("align", False))
        self.feature_kind: str = meta["features"]
        self.threshold: float = float(meta.get("threshold", 0.5))
        self.calibration: str = meta.get("calibration", "none")
        self._fused: FusedMLP | None = None

    @property
    def anxious_index(self) -> int | None:
        return self.classes.index("anxious") if "anxious" in self.classes else None

    def normalize(self, landmarks: np.ndarray, width=None, height=None) -> np.ndarray:
        return normalize(landmarks, self.normalize_settings, width=width, height=height)

    def predict_shapes(self, shapes: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        """Probabilities for already-normalised shapes (N, 478, 3)."""
        from .train import predict_proba

        shapes = np.asarray(shapes, np.float32)
        if self.calibration == "personal-neutral":
            if reference is None:
                raise ValueError("this checkpoint uses the personal-neutral protocol: pass the person's "
                                 "normalised neutral face as reference= (calibrate first)")
            reference = np.asarray(reference, np.float32)
            if self.feature_kind == "measures":  # the face's measures relative to the reference face's
                x = features(shapes, "measures") - features(reference[None], "measures")
            else:
                x = features(shapes - reference, self.feature_kind)
        else:
            x = features(shapes, self.feature_kind)
        if self._fused is None:
            if next(self.model.parameters()).is_cuda:
                return predict_proba(self.model, x)
            # CPU: the same function without PyTorch's per-operator overhead (model.FusedMLP); built once and
            # then used without asking torch anything (a torch call costs ~10 µs of the live path's frame)
            self._fused = FusedMLP(self.model)
        return self._fused.predict_proba(x)

    def predict_landmarks(self, landmarks: np.ndarray, width=None, height=None,
                          reference: np.ndarray | None = None) -> np.ndarray:
        lm = np.asarray(landmarks, np.float32)
        single = lm.ndim == 2
        prob = self.predict_shapes(self.normalize(lm[None] if single else lm, width, height), reference)
        return prob[0] if single else prob

    def describe(self) -> dict:
        """What a user (or ``GET /model``) needs to know about this model."""
        keys = ("task", "classes", "normalization", "features", "threshold", "calibration", "training_data",
                "metrics", "model_config", "created")
        out = {k: self.meta[k] for k in keys if k in self.meta}
        if isinstance(out.get("training_data"), dict):  # whom it saw (digests, for experiment.check_unseen): noise here
            out["training_data"] = {k: v for k, v in out["training_data"].items() if k != "people_seen"}
        return out


def model_config_from(meta: dict) -> ModelConfig:
    return ModelConfig(**meta["model_config"])


def normalization_meta(settings: NormalizeSettings) -> dict:
    d = asdict(settings)
    return {"mode": d["mode"], "align": d["align"], "version": d["version"]}
