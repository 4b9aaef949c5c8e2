"""Stage 1, **index**: scan an AI Hub download straight from its ZIP files.

Nothing is unpacked: only each ZIP's central directory and the small label
JSONs are read.  The result is one pandas DataFrame with a row per ZIP member,
bad members included (their ``problem`` column says why they cannot be used),
so that nothing is dropped silently.

Layout of the download (see ``../shared/datasets/README.md``)::

    <root>/Training/[원천]EMOIMG_불안_TRAIN_01.zip   images
    <root>/Training/[라벨]EMOIMG_불안_TRAIN.zip      img_emotion_training_data(불안).json
    <root>/Validation/[원천]EMOIMG_불안_VALID.zip
    <root>/Validation/[라벨]EMOIMG_불안_VALID.zip
"""
from __future__ import annotations

import json
import re
import sys
import unicodedata
import warnings
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from .labels import ANNOTATORS, EMOTIONS

SPLITS = ("Training", "Validation")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

_ZIP_RE = re.compile(r"\[(?P<kind>원천|라벨)\]\s*EMOIMG_(?P<emotion>[^_]+)_(?P<tag>TRAIN|VALID)"
                     r"(?:_(?P<part>\d+))?\.zip$", re.IGNORECASE)
_NAME_RE = re.compile(
    r"^(?P<person>[0-9a-fA-F]{8,})_(?P<gender>남|여)_(?P<age>\d+)_(?P<emotion>" + "|".join(EMOTIONS) + r")_"
    r"(?P<background>.+)_(?P<timestamp>\d{14}-\d{3}-\d{3})\.(?P<ext>jpe?g)$", re.IGNORECASE)

#: The labelled face box (median of the annotators' valid boxes, upright pixels), when there is one.
BOX_COLUMNS = ["box_x0", "box_y0", "box_x1", "box_y1"]
#: Columns of an index, whatever the source (AI Hub, image folder, synthetic).
BASE_COLUMNS = ["source", "split", "container", "member", "name", "person", "emotion", "problem"]


def recover_name(info: zipfile.ZipInfo) -> str:
    """The real file name of a ZIP member, NFC-normalised.

    AI Hub ZIPs store names as CP949 bytes with the UTF-8 flag (0x800) clear, so
    Python's ``zipfile`` decodes them as CP437 mojibake.  Undo that when the flag
    is clear; fall back to UTF-8 (some tools omit the flag) and then to the raw name.
    """
    name = info.filename
    if not info.flag_bits & 0x800:
        raw = name.encode("cp437")
        for encoding in ("cp949", "utf-8"):
            try:
                name = raw.decode(encoding)
                break
            except UnicodeDecodeError:
                continue
    return unicodedata.normalize("NFC", name)


def parse_name(name: str) -> dict | None:
    """Split an AI Hub image name into its fields, or ``None`` if it does not match.

    ``<person hash>_<남|여>_<age>_<emotion>_<background>_<YYYYMMDDhhmmss-NNN-NNN>.jpg``;
    the background may hold ``&``, spaces and parentheses.
    """
    m = _NAME_RE.match(unicodedata.normalize("NFC", Path(name).name))
    if not m:
        return None
    fields = m.groupdict()
    fields["age"] = int(fields["age"])
    fields["ext"] = "." + fields["ext"].lower()
    return fields


def read_label_json(data: bytes, origin: str = "<bytes>") -> list[dict]:
    """Decode a label JSON: UTF-8 (with or without a BOM), else CP949."""
    for encoding in ("utf-8-sig", "cp949"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise ValueError(f"{origin}: label JSON is neither UTF-8 nor CP949; re-download this label ZIP")
    try:
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{origin}: label JSON is not valid JSON ({exc}); re-download this label ZIP") from exc
    if isinstance(records, dict):  # tolerate {"data": [...]}-style wrappers
        records = next((v for v in records.values() if isinstance(v, list)), [])
    return [r for r in records if isinstance(r, dict)]


def warn_at_caller(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` reported at the first line outside the facekit package (the user's notebook cell
    or script), however deep inside the kit it was raised (``skip_file_prefixes`` is Python 3.12+)."""
    package = str(Path(__file__).resolve().parent)
    frame, level = sys._getframe(1), 2  # stacklevel 1 is this function, 2 its caller
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def _label_records(label_zip: Path) -> dict[str, dict]:
    """filename → label record, from every JSON in a label ZIP.  A broken ZIP or JSON
    is reported with a warning and skipped: its photos are still indexed, unlabelled."""
    out: dict[str, dict] = {}
    try:
        with zipfile.ZipFile(label_zip) as zf:
            for info in zf.infolist():
                if info.is_dir() or not recover_name(info).lower().endswith(".json"):
                    continue
                try:
                    records = read_label_json(zf.read(info), f"{label_zip} :: {recover_name(info)}")
                except ValueError as exc:
                    warn_at_caller(str(exc))
                    continue
                for rec in records:
                    if "filename" in rec:
                        out[unicodedata.normalize("NFC", str(rec["filename"]))] = rec
    except (zipfile.BadZipFile, OSError) as exc:
        warn_at_caller(f"{label_zip}: cannot read this label ZIP ({exc}); its photos stay unlabelled "
                       "(policies other than 'uploader' drop them). Re-download it.")
    return out


def _face_box(rec: dict) -> dict:
    """The annotators' face box (median of their non-degenerate boxes, upright pixels), or nothing."""
    boxes = []
    for a in ANNOTATORS:
        b = (rec.get(a) or {}).get("boxes") or {}
        try:
            x0, y0, x1, y1 = (float(b[k]) for k in ("minX", "minY", "maxX", "maxY"))
        except (KeyError, TypeError, ValueError):
            continue
        if x1 - x0 > 1 and y1 - y0 > 1:
            boxes.append((x0, y0, x1, y1))
    if not boxes:
        return {}
    med = np.median(np.array(boxes), axis=0)
    return dict(zip(BOX_COLUMNS, med.tolist()))


def _split_dir(root: Path, split: str) -> Path | None:
    for child in root.iterdir() if root.is_dir() else []:
        if child.is_dir() and child.name.lower() == split.lower():
            return child
    return None


def find_zips(root: Path | str) -> pd.DataFrame:
    """The ZIPs of an AI Hub root: one row per file with split, kind (원천/라벨), emotion and part."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"AI Hub root {root} does not exist; set FACEKIT_DATA to the folder "
                                "that holds Training/ and Validation/")
    rows = []
    for split in SPLITS:
        folder = _split_dir(root, split)
        if folder is None:
            continue
        for path in sorted(folder.glob("*.zip")):
            m = _ZIP_RE.search(unicodedata.normalize("NFC", path.name))
            if m:
                rows.append({"split": split, "kind": m["kind"], "emotion": m["emotion"],
                             "part": int(m["part"] or 1), "zip": str(path), "bytes": path.stat().st_size})
    if not rows:
        raise FileNotFoundError(f"no AI Hub ZIPs ([원천]EMOIMG_*.zip) under {root}/Training or "
                                f"{root}/Validation; set FACEKIT_DATA to the folder that holds them")
    return pd.DataFrame(rows)


def index_aihub(root: Path | str) -> pd.DataFrame:
    """Index an AI Hub root: a row per member of every ``[원천]`` image ZIP.

    Columns: ``source`` ("aihub"), ``split``, ``container`` (the ZIP's path),
    ``member`` (the stored member name, for opening), ``name`` (recovered, NFC),
    ``person``, ``gender``, ``age``, ``emotion`` (the uploader's, from the name),
    ``background``, ``timestamp`` (as in the name) and ``taken_at``, ``ext``, ``annot_A/B/C`` (the annotators'
    ``faceExp`` votes), ``is_prof``, ``labelled`` (a label record was found),
    ``box_x0/y0/x1/y1`` (the annotators' face box, used to pick the labelled face
    when a photo shows several), ``crc`` and ``bytes`` (from the ZIP directory,
    used as the cache's content key)
    and ``problem`` (``None``, or why the member cannot be used).
    """
    zips = find_zips(root)
    labels: dict[str, dict[str, dict]] = {}
    for split in SPLITS:
        labels[split] = {}
        for path in zips.query("kind == '라벨' and split == @split")["zip"]:
            labels[split].update(_label_records(Path(path)))
    rows = []
    for z in zips.query("kind == '원천'").itertuples():
        try:
            with zipfile.ZipFile(z.zip) as zf:
                infos = [i for i in zf.infolist() if not i.is_dir()]
        except (zipfile.BadZipFile, OSError) as exc:
            warn_at_caller(f"{z.zip}: cannot read this ZIP ({exc}); it is listed with a problem. "
                           "Re-download it (or check the copy finished).")
            rows.append({"source": "aihub", "split": z.split, "container": z.zip, "member": "",
                         "name": Path(z.zip).name, "zip_emotion": z.emotion, "crc": None, "bytes": None,
                         "labelled": False, "problem": f"ZIP cannot be read ({exc}); re-download it"})
            continue
        for info in infos:
            name = recover_name(info)
            row = {"source": "aihub", "split": z.split, "container": z.zip, "member": info.filename,
                   "name": name, "zip_emotion": z.emotion, "crc": info.CRC, "bytes": info.file_size,
                   "problem": None}
            fields = parse_name(name)
            if not Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                row["problem"] = "not an image (file name has no image extension)"
            elif fields is None:
                row["problem"] = "name does not follow the AI Hub pattern (no person or emotion)"
            else:
                row.update(fields)
            # the label JSON names photos by file name alone: a ZIP that keeps them in a folder still matches
            rec = labels[z.split].get(name) or labels[z.split].get(PurePosixPath(name).name)
            row["labelled"] = rec is not None
            if rec is not None:
                row["is_prof"] = rec.get("isProf")
                row.update(_face_box(rec))
                for a in ANNOTATORS:
                    vote = (rec.get(a) or {}).get("faceExp")
                    row[a] = unicodedata.normalize("NFC", vote) if isinstance(vote, str) else None
            rows.append(row)
    df = pd.DataFrame(rows)
    for col in ("person", "gender", "age", "emotion", "background", "timestamp", "ext", "is_prof", *ANNOTATORS,
                *BOX_COLUMNS):
        if col not in df.columns:
            df[col] = None
    df["age"] = df["age"].astype("Int64")
    df["taken_at"] = pd.to_datetime(df["timestamp"].str[:14], format="%Y%m%d%H%M%S", errors="coerce")
    order = BASE_COLUMNS + [c for c in df.columns if c not in BASE_COLUMNS]
    return df[order]


def shared_people(index: pd.DataFrame) -> set[str]:
    """People who appear in both Training and Validation (the official split leaks them)."""
    ok = index[index["problem"].isna()]
    train = set(ok.loc[ok["split"] == "Training", "person"].dropna())
    valid = set(ok.loc[ok["split"] == "Validation", "person"].dropna())
    return train & valid


def summary(index: pd.DataFrame) -> dict:
    """Counts a user checks first: photos, people, problems, and the Training/Validation overlap."""
    ok = index[index["problem"].isna()]
    return {
        "members": int(len(index)),
        "usable_photos": int(len(ok)),
        "problems": int(index["problem"].notna().sum()),
        "people": int(ok["person"].nunique()),
        "people_by_split": {s: int(g["person"].nunique()) for s, g in ok.groupby("split")},
        "photos_by_split": {s: int(len(g)) for s, g in ok.groupby("split")},
        "shared_people": len(shared_people(index)) if "split" in index else 0,
    }
