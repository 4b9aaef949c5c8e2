"""Other sources through the same index interface: folders of images, presets for
JAFFE and CK+, the synthetic demo source, and one entry point for all of them.

Every index has the columns of :data:`facekit.index.BASE_COLUMNS`, so sampling,
extraction and everything after work the same on any of them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .index import BASE_COLUMNS, IMAGE_EXTENSIONS, index_aihub
from .labels import to_emotion


@dataclass(frozen=True)
class FolderSpec:
    """How to read person and label from an image's path relative to the folder.

    ``pattern`` is a regular expression searched in the relative path (``/`` as
    separator) with named groups ``person`` and ``label``; ``label_map`` maps raw
    labels to emotion names (English or Korean, see :func:`facekit.labels.to_emotion`).
    Images whose label is not in the map are kept in the index with a ``problem``.
    """

    pattern: str
    label_map: dict[str, str] = field(default_factory=dict)


JAFFE = FolderSpec(
    pattern=r"(?:^|/)(?P<person>[A-Z]{2})\.(?P<label>[A-Z]{2})\d+\.\d+\.tiff?$",
    label_map={"NE": "neutral", "FE": "fear", "HA": "happy", "SU": "surprise",
               "AN": "anger", "DI": "disgust", "SA": "sad"},
)
CKPLUS = FolderSpec(  # contempt has no AI Hub counterpart and stays unmapped
    pattern=r"(?:^|/)(?P<label>[a-z]+)/(?P<person>S\d{3})_\d+_\d+\.png$",
    label_map={"neutral": "neutral", "fear": "fear", "happiness": "happy", "surprise": "surprise",
               "anger": "anger", "disgust": "disgust", "sadness": "sad"},
)
PRESETS = {"jaffe": JAFFE, "ckplus": CKPLUS}


def parse_label_map(text: str) -> dict[str, str]:
    """``"NE=neutral,FE=anxious"`` → ``{"NE": "neutral", "FE": "anxious"}`` (the CLI's ``--label-map``)."""
    out = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"--label-map item {item!r} is not KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def index_folder(root: Path | str, spec: FolderSpec, source: str = "folder") -> pd.DataFrame:
    """Index every image file under ``root`` with person and emotion from ``spec``.

    A row per image file; ``problem`` says why a file cannot be used (the pattern
    does not match, or the label is not mapped).  ``crc`` is empty and ``bytes``
    and ``mtime_ns`` key the landmark cache.
    """
    root = Path(root).expanduser().resolve()
    if root.is_file():
        raise NotADirectoryError(f"{root} is a file; give the image folder that holds it")
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist; check the path")
    try:
        regex = re.compile(spec.pattern)
    except re.error as exc:
        raise ValueError(f"pattern {spec.pattern!r} is not a valid regular expression ({exc}); fix it (and quote it "
                         "for the shell on the command line)") from None
    if not {"person", "label"} <= set(regex.groupindex):
        raise ValueError(f"pattern {spec.pattern!r} needs named groups (?P<person>...) and (?P<label>...)")
    label_map = {k: to_emotion(v) for k, v in spec.label_map.items()}
    rows = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS):
        rel = path.relative_to(root).as_posix()
        stat = path.stat()
        row = {"source": source, "split": "all", "container": str(root), "member": rel, "name": path.name,
               "person": None, "emotion": None, "raw_label": None, "problem": None,
               "crc": None, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        m = regex.search(rel)
        if m is None:
            row["problem"] = "path does not match the pattern"
        else:
            row["person"], row["raw_label"] = m["person"], m["label"]
            if label_map:
                row["emotion"] = label_map.get(m["label"])
                if row["emotion"] is None:
                    row["problem"] = f"label {m['label']!r} is not in the label map"
            else:
                try:
                    row["emotion"] = to_emotion(m["label"])
                except ValueError:
                    row["problem"] = f"label {m['label']!r} is not an emotion name; give a label map"
        rows.append(row)
    if not rows:
        raise FileNotFoundError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {root}")
    if all(r["problem"] == "path does not match the pattern" for r in rows):
        raise ValueError(f"no image path under {root} matches the pattern {spec.pattern!r} (it is searched in "
                         f"paths relative to the folder, with / between parts, e.g. {rows[0]['member']!r}); "
                         "fix the pattern")
    df = pd.DataFrame(rows)
    return df[BASE_COLUMNS + [c for c in df.columns if c not in BASE_COLUMNS]]


def index_preset(name: str, root: Path | str | None = None) -> pd.DataFrame:
    """Index one of the real datasets in ``../shared/datasets`` (``jaffe`` or ``ckplus``)."""
    from .paths import shared_datasets

    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return index_folder(root or shared_datasets() / name, PRESETS[name], source=name)


def load_index(data: str | Path | None = None, pattern: str | None = None,
               label_map: dict[str, str] | None = None, **synthetic_options) -> pd.DataFrame:
    """One entry point: an AI Hub root, a preset folder (jaffe, ckplus), any folder with
    ``pattern``, or the synthetic demo source.

    ``data=None`` reads ``FACEKIT_DATA`` and falls back to the synthetic demo data
    (``"demo"`` asks for it explicitly; ``synthetic_options`` go to
    :func:`facekit.synthetic.make_index`).  A folder whose name is a preset's
    (``jaffe``, ``ckplus``) uses that preset unless ``pattern`` is given.  An AI Hub
    root is recognised by its ``Training``/``Validation`` folders.
    """
    from .paths import data_root

    data = data if data is not None else data_root()
    if data is None or str(data) == "demo":
        from .synthetic import make_index

        return make_index(**synthetic_options)
    path = Path(data)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; set FACEKIT_DATA (or pass the path) to the folder "
                                "that holds Training/ and Validation/, or leave it unset for the demo data")
    if pattern:
        return index_folder(path, FolderSpec(pattern, label_map or {}))
    if path.name.lower() in PRESETS:
        return index_folder(path, PRESETS[path.name.lower()], source=path.name.lower())
    if path.is_dir() and any(c.is_dir() and c.name.lower() in ("training", "validation") for c in path.iterdir()):
        return index_aihub(path)
    if path.is_file():
        raise NotADirectoryError(f"{path} is a file; give the folder that holds the data (an AI Hub root with "
                                 "Training/ and Validation/, or an image folder)")
    raise ValueError(f"{path} is neither an AI Hub root (Training/, Validation/) nor a known preset folder; "
                     "give a pattern (--pattern on the command line, pattern= in Python) with (?P<person>...) "
                     "and (?P<label>...) groups")
