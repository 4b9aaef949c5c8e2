"""Other sources through the index interface: image folders, JAFFE/CK+ presets, the demo source."""
from __future__ import annotations

import pandas as pd
import pytest
from builders import write_zip

from facekit.index import BASE_COLUMNS
from facekit.sources import FolderSpec, index_folder, index_preset, load_index, parse_label_map

PATTERN = r"^(?P<person>[a-z]+)/(?P<label>[a-z]+)_\d+\.(?:png|jpg)$"


@pytest.fixture
def folder(tmp_path):
    """people/label_NN images, one unmapped label, one path off the pattern, one non-image file."""
    files = ["alice/neutral_01.png", "alice/fear_02.png", "bob/neutral_01.jpg", "bob/fear_07.png",
             "bob/contempt_01.png", "misc/README.png", "alice/notes.txt"]
    for k, rel in enumerate(files):
        path = tmp_path / "photos" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * (k + 1))
    return tmp_path / "photos"


def _by_member(index: pd.DataFrame) -> pd.DataFrame:
    return index.set_index("member")


def test_index_folder_with_pattern_and_label_map(folder):
    """Person and emotion come from the path; unmapped labels and off-pattern paths are problems."""
    index = index_folder(folder, FolderSpec(PATTERN, {"neutral": "neutral", "fear": "anxious"}), source="mine")
    assert list(index.columns[:len(BASE_COLUMNS)]) == BASE_COLUMNS
    rows = _by_member(index)
    assert "alice/notes.txt" not in rows.index  # not an image file
    assert len(rows) == 6
    assert rows.loc["alice/fear_02.png", ["person", "emotion", "raw_label"]].tolist() == ["alice", "불안", "fear"]
    assert rows.loc["bob/neutral_01.jpg", "emotion"] == "중립"
    assert "'contempt' is not in the label map" in rows.loc["bob/contempt_01.png", "problem"]
    assert rows.loc["misc/README.png", "problem"] == "path does not match the pattern"
    assert rows["problem"].notna().sum() == 2
    assert (index["source"] == "mine").all() and (index["container"] == str(folder.resolve())).all()
    # the cache's content key: size and mtime of each file, no CRC
    assert rows.loc["alice/fear_02.png", "bytes"] == 2
    assert index["mtime_ns"].gt(0).all() and index["crc"].isna().all()


def test_index_folder_without_label_map_uses_emotion_names(folder):
    """With no map, raw labels are read as emotion names (fear → 불안); others are problems."""
    rows = _by_member(index_folder(folder, FolderSpec(PATTERN)))
    assert rows.loc["bob/fear_07.png", "emotion"] == "불안"
    assert "not an emotion name" in rows.loc["bob/contempt_01.png", "problem"]


def test_index_folder_errors(folder, tmp_path):
    """Pattern without named groups, missing or empty folder, label mapped to a non-emotion."""
    with pytest.raises(ValueError, match="named groups"):
        index_folder(folder, FolderSpec(r"(\w+)/(\w+)_\d+"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        index_folder(tmp_path / "nowhere", FolderSpec(PATTERN))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files"):
        index_folder(tmp_path / "empty", FolderSpec(PATTERN))
    with pytest.raises(ValueError, match="unknown emotion"):
        index_folder(folder, FolderSpec(PATTERN, {"neutral": "bored"}))


def test_parse_label_map():
    """The CLI's --label-map text → dict; items that are not KEY=VALUE are named in the error."""
    assert parse_label_map("NE=neutral, FE=anxious,") == {"NE": "neutral", "FE": "anxious"}
    assert parse_label_map("") == {}
    for bad in ("NE", "=neutral", "NE="):
        with pytest.raises(ValueError, match=f"item {bad!r} is not KEY=VALUE"):
            parse_label_map(f"FE=fear,{bad}")


def test_load_index_demo(monkeypatch):
    """``"demo"``, or nothing with FACEKIT_DATA unset, gives the synthetic source; options pass through."""
    monkeypatch.delenv("FACEKIT_DATA", raising=False)
    demo = load_index("demo", n_people=5, photos_per_emotion=2)
    assert (demo["source"] == "synthetic").all() and len(demo) == 5 * 2 * 2
    assert load_index(None, n_people=5, photos_per_emotion=2).equals(demo)


def test_load_index_reads_facekit_data(monkeypatch, folder):
    """With no path given, FACEKIT_DATA is the data."""
    monkeypatch.setenv("FACEKIT_DATA", str(folder))
    index = load_index(pattern=PATTERN)
    assert (index["source"] == "folder").all() and len(index) == 6


def test_load_index_missing_path_names_it_and_facekit_data(tmp_path):
    """A wrong path names itself and says how to set FACEKIT_DATA."""
    missing = tmp_path / "AIHub"
    with pytest.raises(FileNotFoundError, match="FACEKIT_DATA") as err:
        load_index(missing)
    assert str(missing) in str(err.value)


def test_load_index_dispatch(tmp_path, folder):
    """Preset by folder name, any folder with a pattern, an AI Hub root, else a clear error."""
    jaffe = tmp_path / "jaffe"
    jaffe.mkdir()
    for name in ("KA.NE1.26.tiff", "KA.FE1.45.tiff", "KM.SU3.59.tiff", "notes.tiff"):
        (jaffe / name).write_bytes(b"x")
    index = load_index(jaffe)
    assert (index["source"] == "jaffe").all()
    assert _by_member(index).loc["KA.FE1.45.tiff", "emotion"] == "불안"
    assert _by_member(index).loc["notes.tiff", "problem"] == "path does not match the pattern"

    assert (load_index(folder, pattern=PATTERN)["source"] == "folder").all()

    root = tmp_path / "download"
    name = "ab" * 32 + "_여_20_중립_숙박 및 거주공간_20210101000000-000-001.jpg"
    write_zip(root / "Training" / "[원천]EMOIMG_중립_TRAIN_01.zip", {name: b"x"})
    aihub = load_index(root)
    assert aihub["source"].tolist() == ["aihub"] and aihub["name"].tolist() == [name]

    with pytest.raises(ValueError, match="neither an AI Hub root"):
        load_index(folder)


def test_unknown_preset():
    """Only the jaffe and ckplus presets exist."""
    with pytest.raises(ValueError, match="unknown preset"):
        index_preset("fer2013")


# ----------------------------------------------------------------------------- real data

def test_real_jaffe_preset(jaffe_root):
    """JAFFE: 213 photos of 10 people; 30 neutral and 32 fear (= 불안), every person has both."""
    index = index_preset("jaffe", jaffe_root)
    assert len(index) == 213 and index["problem"].isna().all()
    assert index["person"].nunique() == 10
    counts = index["emotion"].value_counts()
    assert (counts["중립"], counts["불안"]) == (30, 32)
    both = index[index["emotion"].isin(["중립", "불안"])].groupby("person")["emotion"].nunique()
    assert (both == 2).all() and len(both) == 10


def test_real_jaffe_by_folder_name(jaffe_root):
    """A folder named jaffe uses the JAFFE preset without a pattern."""
    assert (load_index(jaffe_root)["source"] == "jaffe").all()


def test_real_ckplus_preset(ckplus_root):
    """CK+: 627 neutral, 25 fear (= 불안), fear people all have neutral; contempt has no AI Hub emotion."""
    index = index_preset("ckplus", ckplus_root)
    counts = index["emotion"].value_counts()
    assert (counts["중립"], counts["불안"]) == (627, 25)
    contempt = index[index["raw_label"] == "contempt"]
    assert len(contempt) > 0 and contempt["problem"].notna().all() and contempt["emotion"].isna().all()
    assert index.loc[index["raw_label"] != "contempt", "problem"].isna().all()
    fear_people = set(index.loc[index["emotion"] == "불안", "person"])
    assert len(fear_people) == 25
    assert fear_people <= set(index.loc[index["emotion"] == "중립", "person"])
