"""Stage 1, index: AI Hub ZIPs with CP949 names and label JSONs, read without unpacking."""
from __future__ import annotations

import json
import unicodedata
import zipfile

import numpy as np
import pandas as pd
import pytest
from builders import write_zip

from facekit.index import (BASE_COLUMNS, find_zips, index_aihub, parse_name, read_label_json, recover_name,
                           shared_people, summary)
from facekit.labels import ClassSet, agreement_table, apply_policy, to_emotion
from facekit.sources import FolderSpec, index_folder

HASH_A, HASH_B, HASH_C, HASH_D = ("a1" * 32, "b2" * 32, "c3" * 32, "d4" * 32)
BG_LIFT = "교통&이동수단(엘리베이터 포함)"
# Training: person A in 불안 and 중립, B in 불안; Validation: B again (shared) and D.
A_ANX = f"{HASH_A}_여_20_불안_{BG_LIFT}_20210202165501-001-007.jpg"
B_ANX = f"{HASH_B}_남_30_불안_숙박 및 거주공간_20210203101112-002-003.jpeg"
A_NEU = f"{HASH_A}_여_20_중립_공공시설&종교&의료시설_20210204080910-003-004.jpg"
C_NEU = f"{HASH_C}_남_40_중립_오락&공연시설_20210205111213-004-005.jpg"
B_VAL = f"{HASH_B}_남_30_불안_상업시설&점포&시장_20210206141516-005-006.jpg"
D_VAL = f"{HASH_D}_여_50_불안_{BG_LIFT}_20210207171819-006-007.jpg"
ODD = "사진_001.jpg"  # an image whose name does not follow the AI Hub pattern

VOTES = {  # annot_A, annot_B, annot_C
    A_ANX: ("불안", "불안", "중립"),   # majority 불안, not unanimous
    B_ANX: ("불안", "중립", "기쁨"),   # no majority
    A_NEU: ("중립", "중립", "중립"),   # unanimous
    C_NEU: ("불안", "불안", "중립"),   # majority disagrees with the uploader
    B_VAL: ("불안", "불안", "불안"),
}                                     # D_VAL has no label record


BOX = {"minX": 10.0, "minY": 20.0, "maxX": 110.0, "maxY": 140.0}
BOXES = {  # A_ANX: two annotators' boxes differ and one box is degenerate (as some real ones are)
    A_ANX: (BOX, {"minX": 14.0, "minY": 24.0, "maxX": 114.0, "maxY": 144.0},
            {"minX": 50.0, "minY": 20.0, "maxX": 50.0, "maxY": 140.0}),
}


def _record(name: str) -> dict:
    f = parse_name(name)
    rec = {"filename": name, "gender": f["gender"], "age": f["age"], "isProf": "일반인",
           "faceExp_uploader": f["emotion"], "bg_uploader": f["background"].replace("&", "/")}
    for annotator, vote, box in zip("ABC", VOTES[name], BOXES.get(name, (BOX, BOX, BOX))):
        rec[f"annot_{annotator}"] = {"boxes": box, "faceExp": vote, "bg": rec["bg_uploader"]}
    return rec


def _label_zip(path, json_name: str, names: list[str], encoding: str) -> None:
    text = json.dumps([_record(n) for n in names], ensure_ascii=False, indent=1)
    write_zip(path, {json_name: text.encode(encoding)})


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    """A tiny AI Hub download: two Training emotions, one Validation emotion, bad members included."""
    root = tmp_path_factory.mktemp("aihub")
    jpeg = b"\xff\xd8\xff\xe0 not decoded by the index"
    write_zip(root / "Training" / "[원천]EMOIMG_불안_TRAIN_01.zip",
              {A_ANX: jpeg, B_ANX: jpeg, "Thumbs.db": b"\x00thumbs\x00", ODD: jpeg})
    _label_zip(root / "Training" / "[라벨]EMOIMG_불안_TRAIN.zip", "img_emotion_training_data(불안).json",
               [A_ANX, B_ANX], "utf-8-sig")  # UTF-8 with a BOM
    write_zip(root / "Training" / "[원천]EMOIMG_중립_TRAIN_01.zip", {A_NEU: jpeg, C_NEU: jpeg})
    _label_zip(root / "Training" / "[라벨]EMOIMG_중립_TRAIN.zip", "img_emotion_training_data(중립).json",
               [A_NEU, C_NEU], "cp949")
    write_zip(root / "Validation" / "[원천]EMOIMG_불안_VALID.zip", {B_VAL: jpeg, D_VAL: jpeg})
    _label_zip(root / "Validation" / "[라벨]EMOIMG_불안_VALID.zip", "img_emotion_validation_data(불안).json",
               [B_VAL], "utf-8")
    (root / "Training" / "readme.zip").write_bytes(b"not one of the AI Hub ZIPs")
    return root


@pytest.fixture(scope="module")
def tiny(tiny_root) -> pd.DataFrame:
    return index_aihub(tiny_root)


def _row(index: pd.DataFrame, name: str) -> pd.Series:
    rows = index[index["name"] == name]
    assert len(rows) == 1, f"{name} should appear exactly once"
    return rows.iloc[0]


# ----------------------------------------------------------------------------- tiny ZIPs

def test_zip_names_really_are_cp949_without_utf8_flag(tiny_root):
    """The fixture reproduces the AI Hub quirk: Python's zipfile shows CP437 mojibake."""
    with zipfile.ZipFile(tiny_root / "Training" / "[원천]EMOIMG_불안_TRAIN_01.zip") as zf:
        infos = zf.infolist()
    assert all(not info.flag_bits & 0x800 for info in infos)
    assert A_ANX not in [i.filename for i in infos]
    assert A_ANX in [recover_name(i) for i in infos]


def test_index_has_a_row_per_image_zip_member(tiny):
    """Every member of every [원천] ZIP is a row, bad ones included; label ZIPs and strays are not."""
    assert list(tiny.columns[:len(BASE_COLUMNS)]) == BASE_COLUMNS
    assert len(tiny) == 4 + 2 + 2
    assert set(tiny["name"]) == {A_ANX, B_ANX, "Thumbs.db", ODD, A_NEU, C_NEU, B_VAL, D_VAL}
    assert (tiny["source"] == "aihub").all()
    assert tiny.groupby("split").size().to_dict() == {"Training": 6, "Validation": 2}


def test_recovered_names_are_nfc_korean_and_open_the_member(tiny):
    """``name`` is the real Korean name (NFC); ``member`` is what opens the member in its ZIP."""
    for row in tiny.itertuples():
        assert unicodedata.is_normalized("NFC", row.name)
        assert "╗" not in row.name and "┐" not in row.name
        with zipfile.ZipFile(row.container) as zf:
            assert zf.getinfo(row.member).file_size == row.bytes
            assert zf.getinfo(row.member).CRC == row.crc


def test_members_kept_in_a_folder_get_their_labels(tmp_path):
    """The label JSON names a photo by its file name alone: an image ZIP that keeps its photos in a folder (as a
    re-zipped copy of the download may) still gets every label, vote and box."""
    jpeg = b"\xff\xd8\xff\xe0 not decoded by the index"
    write_zip(tmp_path / "Training" / "[원천]EMOIMG_불안_TRAIN_01.zip", {f"EMOIMG_불안_TRAIN_01/{A_ANX}": jpeg})
    _label_zip(tmp_path / "Training" / "[라벨]EMOIMG_불안_TRAIN.zip", "img_emotion_training_data(불안).json", [A_ANX],
               "utf-8")
    row = index_aihub(tmp_path).iloc[0]
    assert row["name"] == f"EMOIMG_불안_TRAIN_01/{A_ANX}" and row["person"] == HASH_A
    assert row["labelled"] and (row["annot_A"], row["annot_B"], row["annot_C"]) == VOTES[A_ANX]


def test_name_fields_are_parsed(tiny):
    """Person, gender, age, uploader emotion, background (with & and parentheses), time and ext."""
    a = _row(tiny, A_ANX)
    assert (a.person, a.gender, a.age, a.emotion) == (HASH_A, "여", 20, "불안")
    assert a.background == BG_LIFT
    assert a.timestamp == "20210202165501-001-007"
    assert a.taken_at == pd.Timestamp("2021-02-02 16:55:01")
    assert a.ext == ".jpg"
    b = _row(tiny, B_ANX)
    assert (b.person, b.gender, b.age, b.background, b.ext) == (HASH_B, "남", 30, "숙박 및 거주공간", ".jpeg")
    assert str(tiny["age"].dtype) == "Int64"


def test_annotator_votes_kept_from_bom_and_cp949_label_json(tiny):
    """Votes come from the UTF-8-with-BOM JSON (불안) and the CP949 JSON (중립) alike."""
    for name, votes in VOTES.items():
        row = _row(tiny, name)
        assert (row.annot_A, row.annot_B, row.annot_C) == votes
        assert row.labelled and row.is_prof == "일반인"
    d = _row(tiny, D_VAL)
    assert not d.labelled
    assert pd.isna(d.annot_A) and pd.isna(d.annot_B) and pd.isna(d.annot_C)


def test_labelled_face_box_is_the_median_of_valid_annotator_boxes(tiny):
    """Degenerate boxes are ignored; photos without a label record have no box."""
    box = ["box_x0", "box_y0", "box_x1", "box_y1"]
    assert _row(tiny, A_ANX)[box].tolist() == [12.0, 22.0, 112.0, 142.0]
    assert _row(tiny, A_NEU)[box].tolist() == [10.0, 20.0, 110.0, 140.0]
    assert _row(tiny, D_VAL)[box].isna().all() and _row(tiny, "Thumbs.db")[box].isna().all()


def test_bad_members_are_rows_with_a_problem(tiny):
    """Thumbs.db and a name off the pattern stay in the index with a reason; good rows have none."""
    thumbs = _row(tiny, "Thumbs.db")
    assert "not an image" in thumbs.problem
    assert pd.isna(thumbs.person) and pd.isna(thumbs.emotion)
    odd = _row(tiny, ODD)
    assert "AI Hub pattern" in odd.problem
    assert tiny["problem"].notna().sum() == 2
    s = summary(tiny)
    assert (s["members"], s["usable_photos"], s["problems"], s["people"]) == (8, 6, 2, 4)
    assert s["people_by_split"] == {"Training": 3, "Validation": 2}


def test_shared_people_finds_a_person_in_both_splits(tiny):
    """Person B has photos in Training and Validation: the leak a held-out evaluation removes."""
    assert shared_people(tiny) == {HASH_B}
    assert summary(tiny)["shared_people"] == 1


# ----------------------------------------------------------------------------- label policies

def test_label_policies(tiny):
    """uploader = the name's emotion; majority = ≥ 2 of 3 annotators; unanimous = all 3; NaN otherwise."""
    ok = tiny[tiny["problem"].isna()].set_index("name")
    uploader = apply_policy(ok, "uploader")
    majority = apply_policy(ok, "majority")
    unanimous = apply_policy(ok, "unanimous")
    assert uploader[A_ANX] == "불안" and uploader[C_NEU] == "중립"
    assert majority[A_ANX] == "불안" and pd.isna(unanimous[A_ANX])
    assert pd.isna(majority[B_ANX]) and pd.isna(unanimous[B_ANX])
    assert majority[A_NEU] == unanimous[A_NEU] == "중립"
    assert majority[C_NEU] == "불안"  # annotators overrule the uploader
    assert pd.isna(majority[D_VAL])  # no label record, no votes
    assert uploader.name == majority.name == "label"


def test_agreement_table(tiny):
    """Share of each uploader emotion whose label survives majority / unanimous votes."""
    table = agreement_table(tiny[tiny["problem"].isna()])
    anx = table.loc["불안"]
    assert (anx.photos, anx.with_votes) == (4, 3)  # D_VAL has no votes
    assert anx.majority_agrees == pytest.approx(2 / 3) and anx.unanimous_agrees == pytest.approx(1 / 3)
    assert table.loc["중립", "majority_agrees"] == pytest.approx(0.5)


def test_vote_policies_need_votes(tmp_path):
    """A source with one label per photo only supports the uploader policy; unknown policies fail."""
    (tmp_path / "KA.NE1.26.tiff").write_bytes(b"x")
    folder = index_folder(tmp_path, FolderSpec(r"(?P<person>[A-Z]{2})\.(?P<label>[A-Z]{2})", {"NE": "neutral"}))
    assert apply_policy(folder, "uploader").tolist() == ["중립"]
    for policy in ("majority", "unanimous"):
        with pytest.raises(ValueError, match="annotator votes"):
            apply_policy(folder, policy)
    with pytest.raises(ValueError, match="unknown label policy"):
        apply_policy(folder, "loudest")


def test_class_sets():
    """Default task 중립=0, 불안=1, everything else −1; ``all()`` is the seven AI Hub emotions."""
    emotions = pd.Series(["중립", "불안", "기쁨", None, np.nan])
    assert ClassSet().encode(emotions).tolist() == [0, 1, -1, -1, -1]
    assert ClassSet().names == ("neutral", "anxious")
    seven = ClassSet.all()
    assert seven.emotions == ("기쁨", "당황", "분노", "불안", "상처", "슬픔", "중립")
    assert seven.encode(emotions).tolist() == [6, 3, 0, -1, -1]
    assert seven.encode(emotions).dtype == np.int64


def test_to_emotion_accepts_english_and_korean():
    """Other datasets' names map onto the AI Hub emotions; unknown names fail."""
    assert to_emotion("fear") == to_emotion("Anxious") == to_emotion("불안") == "불안"
    assert to_emotion(" neutral ") == "중립"
    with pytest.raises(ValueError, match="unknown emotion"):
        to_emotion("contempt")


# ----------------------------------------------------------------------------- pieces

def test_parse_name():
    """Field parsing of one AI Hub name, upper-case and NFD variants, and names that must not match."""
    f = parse_name(A_ANX)
    assert f == {"person": HASH_A, "gender": "여", "age": 20, "emotion": "불안", "background": BG_LIFT,
                 "timestamp": "20210202165501-001-007", "ext": ".jpg"}
    assert parse_name("some/folder/" + A_ANX.replace(".jpg", ".JPG"))["ext"] == ".jpg"
    assert parse_name(unicodedata.normalize("NFD", A_NEU))["emotion"] == "중립"  # macOS-style names
    assert parse_name("Thumbs.db") is None
    assert parse_name(A_ANX.replace("_불안_", "_공포_")) is None  # not an AI Hub emotion
    assert parse_name(A_ANX.replace(".jpg", ".png")) is None


def test_recover_name_variants(tmp_path):
    """CP949 without the flag, UTF-8 without the flag, and flagged UTF-8 in NFD all come back as NFC."""
    class Raw(zipfile.ZipInfo):
        encoding = "utf-8"

        def _encodeFilenameFlags(self):  # noqa: N802
            return self.filename.encode(self.encoding), self.flag_bits & ~0x800

    path = tmp_path / "mixed.zip"
    cp949, utf8 = Raw("cp949_" + A_NEU), Raw("utf8_" + A_NEU)
    cp949.encoding = "cp949"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(cp949, b"")
        zf.writestr(utf8, b"")
        zf.writestr(unicodedata.normalize("NFD", "nfd_" + A_NEU), b"")  # zipfile sets the UTF-8 flag
    with zipfile.ZipFile(path) as zf:
        recovered = [recover_name(i) for i in zf.infolist()]
    assert recovered == ["cp949_" + A_NEU, "utf8_" + A_NEU, "nfd_" + A_NEU]


def test_read_label_json_encodings_and_errors():
    """Label JSON in UTF-8, UTF-8 with BOM, CP949 or wrapped in a dict; broken files name their origin."""
    records = [{"filename": A_ANX, "faceExp_uploader": "불안"}]
    text = json.dumps(records, ensure_ascii=False)
    for encoding in ("utf-8", "utf-8-sig", "cp949"):
        assert read_label_json(text.encode(encoding)) == records
    assert read_label_json(json.dumps({"data": records}, ensure_ascii=False).encode()) == records
    with pytest.raises(ValueError, match="broken.json.*not valid JSON"):
        read_label_json(b"[{", "broken.json")
    with pytest.raises(ValueError, match="neither UTF-8 nor CP949"):
        read_label_json(b"\xff\xfe\xff", "garbage.json")


def test_corrupt_zips_are_reported_not_fatal(tmp_path):
    """A cut-off image ZIP becomes one row with a problem; a broken label JSON leaves its photos
    indexed but unlabelled; both warn, naming the file."""
    write_zip(tmp_path / "Training" / "[원천]EMOIMG_불안_TRAIN_01.zip", {A_ANX: b"x"})
    good = (tmp_path / "Training" / "[원천]EMOIMG_불안_TRAIN_01.zip").read_bytes()
    (tmp_path / "Training" / "[원천]EMOIMG_불안_TRAIN_02.zip").write_bytes(good[: len(good) // 2])
    write_zip(tmp_path / "Training" / "[라벨]EMOIMG_불안_TRAIN.zip",
              {"img_emotion_training_data(불안).json": b"[{"})
    with pytest.warns(UserWarning) as caught:
        index = index_aihub(tmp_path)
    messages = " ".join(str(w.message) for w in caught)
    assert "TRAIN_02.zip" in messages and "not valid JSON" in messages
    assert len(index) == 2
    broken = index[index["container"].str.endswith("TRAIN_02.zip")].iloc[0]
    assert "ZIP cannot be read" in broken.problem
    photo = _row(index, A_ANX)
    assert pd.isna(photo.problem) and not photo.labelled and photo.emotion == "불안"


def test_wrong_root_is_a_clear_error(tmp_path):
    """A missing root, or one without AI Hub ZIPs, says so and points at FACEKIT_DATA."""
    missing = tmp_path / "no-such-folder"
    with pytest.raises(FileNotFoundError, match="FACEKIT_DATA") as err:
        index_aihub(missing)
    assert str(missing) in str(err.value)
    (tmp_path / "Training").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no AI Hub ZIPs"):
        find_zips(tmp_path)


def test_find_zips(tiny_root):
    """Only [원천]/[라벨] EMOIMG ZIPs are found, with kind, emotion, split and part."""
    zips = find_zips(tiny_root)
    assert len(zips) == 6  # readme.zip is not an AI Hub ZIP
    assert sorted(zips["kind"].unique()) == ["라벨", "원천"]
    images = zips[zips["kind"] == "원천"].set_index("emotion")
    assert images.loc["중립", "split"] == "Training" and images.loc["중립", "part"] == 1


# ----------------------------------------------------------------------------- real data

@pytest.fixture(scope="module")
def sample_index(aihub_root) -> pd.DataFrame:
    return index_aihub(aihub_root)


def test_real_aihub_sample_counts(sample_index):
    """The shared AI Hub-layout sample: members, usable photos, people, overlap."""
    s = summary(sample_index)
    assert s["members"] == 1174
    assert s["usable_photos"] == 1173
    assert s["people"] == 135
    assert s["people_by_split"] == {"Training": 108, "Validation": 33}
    assert s["shared_people"] == 6
    problems = sample_index[sample_index["problem"].notna()]
    assert problems["name"].tolist() == ["Thumbs.db"]


def test_real_aihub_sample_emotions_per_split(sample_index):
    """Uploader emotions per split, and every photo's name agrees with its ZIP."""
    ok = sample_index[sample_index["problem"].isna()]
    counts = ok.groupby(["split", "emotion"]).size()
    assert counts["Training"].to_dict() == {"기쁨": 91, "당황": 99, "분노": 64, "불안": 50, "상처": 81,
                                            "슬픔": 52, "중립": 524}
    assert counts["Validation"].to_dict() == {"기쁨": 14, "당황": 20, "분노": 13, "불안": 7, "상처": 16,
                                              "슬픔": 7, "중립": 135}
    assert (ok["emotion"] == ok["zip_emotion"]).all()


def test_real_aihub_sample_names_are_clean_korean(sample_index):
    """Every recovered name is hex, ASCII punctuation and Hangul syllables only: no mojibake."""
    def clean(ch: str) -> bool:
        return ch.isascii() or "\uac00" <= ch <= "\ud7a3"

    bad = [n for n in sample_index["name"] if not all(clean(ch) for ch in n)]
    assert bad == []
    assert (sample_index["name"].str.endswith(".jpeg")).sum() == 34
    assert (sample_index["ext"] == ".jpeg").sum() == 34
    assert sample_index["name"].map(lambda n: unicodedata.is_normalized("NFC", n)).all()


def test_real_aihub_sample_votes_and_policies(sample_index):
    """Annotators were read for nearly every photo, and 불안 is the class they disagree on most."""
    ok = sample_index[sample_index["problem"].isna()]
    unlabelled = ok.loc[~ok["labelled"], "name"].str[:4].tolist()
    assert sorted(unlabelled) == ["eeee", "ffff"]  # only the blank and truncated members have no record
    table = agreement_table(ok)
    assert table["majority_agrees"].idxmin() == "불안"
    assert apply_policy(ok, "majority").isna().sum() > 0
