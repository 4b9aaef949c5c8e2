"""Bad input at every entry point: a clear error naming the file and what to do, and nothing already done lost."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from builders import jpeg_bytes

from facekit import cli
from facekit.checkpoint import CheckpointError, load
from facekit.crossval import Protocol, crossval, prepare
from facekit.extract import extract
from facekit.live import SourceError, VideoFileSource, open_source
from facekit.paths import PROJECT_ROOT
from facekit.sources import FolderSpec, index_folder, load_index
from facekit.synthetic import make_index

PATTERN = r"(?P<person>[^/]+)/(?P<label>\w+)_\d+\.jpg"
DEMO_WEIGHTS = PROJECT_ROOT / "weights" / "demo_binary.pt"


def run(*args: str, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, FACEKIT_CACHE=str(cwd / "cache"))
    env.pop("FACEKIT_DATA", None)
    return subprocess.run([sys.executable, "-m", "facekit", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, encoding="utf-8", timeout=300)


@pytest.fixture
def photos(tmp_path):
    """Two people whose folders hold files of the same names: a real face in p1, bad files in p2."""
    from facekit.demo import portrait

    for person in ("p1", "p2"):
        (tmp_path / "photos" / person).mkdir(parents=True)
    good = jpeg_bytes(portrait(256))
    (tmp_path / "photos" / "p1" / "anxious_1.jpg").write_bytes(good)
    (tmp_path / "photos" / "p2" / "anxious_1.jpg").write_bytes(good[: len(good) // 2])
    (tmp_path / "photos" / "p2" / "neutral_1.jpg").write_text("not an image")
    (tmp_path / "photos" / "p2" / "neutral_2.jpg").write_bytes(b"")
    return tmp_path / "photos"


# ----------------------------------------------------------------------------- index

def test_pattern_that_is_not_a_regex_is_named(photos):
    with pytest.raises(ValueError, match=r"pattern '\(\[oops' is not a valid regular expression"):
        index_folder(photos, FolderSpec("([oops"))


def test_pattern_that_matches_nothing_shows_a_path_it_is_searched_in(photos):
    with pytest.raises(ValueError, match="no image path under .* matches the pattern .*'p1/anxious_1.jpg'"):
        index_folder(photos, FolderSpec(r"nomatch/(?P<person>x)(?P<label>y)"))


def test_a_file_given_as_the_data_folder_is_named_as_a_file(photos):
    photo = photos / "p1" / "anxious_1.jpg"
    for call in (lambda: index_folder(photo, FolderSpec(PATTERN)), lambda: load_index(photo)):
        with pytest.raises(NotADirectoryError, match=f"{photo} is a file"):
            call()


# ----------------------------------------------------------------------------- command line

def test_an_output_that_cannot_be_written_fails_before_any_work(photos, tmp_path):
    """--out under a file, or a folder where a file is wanted: exit 2 at once, no traceback."""
    blocker = photos / "p1" / "anxious_1.jpg"
    cases = [("index", str(photos), "--pattern", PATTERN, "--out", str(blocker / "index.csv")),
             ("extract", str(photos), "--pattern", PATTERN, "--out", str(blocker)),
             ("crossval", str(photos), "--pattern", PATTERN, "--out", str(tmp_path))]
    for args in cases:
        result = run(*args, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert "cannot write" in result.stderr and "Traceback" not in result.stderr
        assert "photos from the landmark cache" not in result.stdout  # nothing was extracted first


def test_crossval_results_are_kept_when_out_vanishes_during_the_run(tmp_path, monkeypatch, capsys):
    out = tmp_path / "gone" / "cv.json"
    monkeypatch.setattr(cli, "check_writable", Path)  # as if the folder went away later
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # where the results are kept: not left in /tmp
    (tmp_path / "gone").write_text("a file where the folder was")
    assert cli.main(["crossval", "demo", "--model", "majority", "--folds", "2", "--out", str(out),
                     "--cache", str(tmp_path / "cache")]) == 1
    err = capsys.readouterr().err
    kept = Path(err.split("the results are kept in ")[1].strip())
    assert json.loads(kept.read_text())["n_people"] == 120
    table = kept.with_name("cv.predictions.csv")  # the per-photo table beside it
    assert f"the per-photo table is kept in {table}" in err and len(table.read_text().splitlines()) > 120


def test_extract_names_each_bad_photo_by_its_own_path(photos, tmp_path):
    """Two files called anxious_1.jpg: the message names the one that failed, not just its file name."""
    result = run("extract", str(photos), "--pattern", PATTERN, "--workers", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"{photos / 'p2' / 'anxious_1.jpg'}: unreadable" in result.stderr
    assert f"{photos / 'p2' / 'neutral_1.jpg'}: not_image" in result.stderr
    assert f"{photos / 'p2' / 'neutral_2.jpg'}: not_image (empty file (0 bytes)" in result.stderr


def test_a_cache_that_cannot_be_written_is_named_before_extracting(photos, tmp_path):
    blocker = photos / "p1" / "anxious_1.jpg"
    result = run("extract", str(photos), "--pattern", PATTERN, "--cache", str(blocker), cwd=tmp_path)
    assert result.returncode == 2 and f"{blocker} is a file, not a folder" in result.stderr
    assert "FaceMesh" not in result.stderr


def test_extract_counts_the_zips_it_samples_from_apart_from_unreadable_ones(tmp_path):
    from builders import write_zip
    from facekit.demo import portrait

    name = f"{'a1' * 32}_여_20_불안_공공시설&종교&의료시설_20210202165501-001-007.jpg"
    root = tmp_path / "aihub"
    good = write_zip(root / "Training" / "[원천]EMOIMG_불안_TRAIN_01.zip", {name: jpeg_bytes(portrait(256))})
    (root / "Training" / "[원천]EMOIMG_불안_TRAIN_02.zip").write_bytes(good.read_bytes()[:40])  # cut off
    result = run("extract", str(root), "--workers", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "1 photos sampled from 1 containers (1 more hold no usable photo)" in result.stdout, result.stdout


def test_extract_with_no_usable_photo_says_so(photos, tmp_path):
    result = run("extract", str(photos), "--pattern", PATTERN, "--label-map", "calm=neutral", cwd=tmp_path)
    assert result.returncode == 2 and "no usable photos in" in result.stderr and "facekit index" in result.stderr


# ----------------------------------------------------------------------------- cross-validation

@pytest.fixture(scope="module")
def demo():
    index = make_index(n_people=6, photos_per_emotion=2)
    return extract(index, progress=False)


def test_a_class_without_photos_is_named_before_training(demo):
    table, landmarks = demo
    table = table.assign(emotion="중립")  # a label map that sends nothing to anxious
    data = prepare(table, landmarks, Protocol())
    with pytest.raises(ValueError, match=r"no usable photo labelled anxious .*'anxious': 0.*--label-map"):
        crossval(data, folds=2, model="majority", progress=False)


def test_one_person_is_named_before_training(demo):
    table, landmarks = demo
    data = prepare(table.assign(person="same"), landmarks, Protocol())
    with pytest.raises(ValueError, match=r"show 1 person \(same\).*\(\?P<person>"):
        crossval(data, folds=2, model="majority", progress=False)


def test_a_fold_that_trains_on_one_person_is_named_before_training(demo):
    table, landmarks = demo
    two = table.assign(person=np.where(table["person"] == table["person"].iloc[0], "a", "b"))
    data = prepare(two, landmarks, Protocol())
    assert sorted(set(data.groups)) == ["a", "b"]
    with pytest.raises(ValueError, match=r"fold 0 of --folds loso trains on 1 person \((a|b)\).*at least 2"):
        crossval(data, folds="loso", model="logreg", progress=False)
    assert crossval(data, folds="loso", model="majority", progress=False)["n_people"] == 2  # needs no inner folds


def test_a_fold_whose_training_part_lacks_a_class_is_named_before_training(demo):
    table, landmarks = demo
    first = table["person"] == table["person"].iloc[0]
    # only the first person keeps anxious photos: the fold that holds them out trains on neutral alone
    data = prepare(table[~((table["emotion"] == "불안") & ~first)], landmarks[~((table["emotion"] == "불안") & ~first).to_numpy()],
                   Protocol())
    with pytest.raises(ValueError, match=r"fold \d+ of --folds loso has no training photo labelled anxious"):
        crossval(data, folds="loso", model="logreg", progress=False)


# ----------------------------------------------------------------------------- checkpoints

def _edited(tmp_path, edit) -> str:
    blob = torch.load(DEMO_WEIGHTS, weights_only=True)
    edit(blob["meta"])
    path = tmp_path / "edited.pt"
    torch.save(blob, path)
    return str(path)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(features="xy"), "feature layout: the model takes 1434 numbers per face"),
    (lambda m: m["model_config"].update(n_features=468 * 3), "the model takes 1404 numbers"),
    (lambda m: m.update(classes=["neutral", "anxious", "happy"]), "2 outputs for 3 class names"),
    (lambda m: m.pop("classes"), r"meta lacks \['classes'\]"),
    (lambda m: m["normalization"].update(mode="other"), "normalization mode: file 'other'"),
])
def test_a_checkpoint_that_does_not_fit_its_own_meta_is_refused_on_load(tmp_path, edit, message):
    path = _edited(tmp_path, edit)
    with pytest.raises(CheckpointError, match=message) as err:
        load(path)
    assert path in str(err.value)


@pytest.mark.parametrize("content, reason", [(b"", "the file is empty"),
                                             (b"hello, I am text", "not a PyTorch file")])
def test_a_file_that_is_no_checkpoint_says_why_in_one_line(tmp_path, content, reason):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=reason) as err:
        load(path)
    assert "\n" not in str(err.value) and "weights_only` set to `False" not in str(err.value)


# ----------------------------------------------------------------------------- live sources

def test_a_live_source_that_gives_no_frame_is_an_error(tmp_path):
    text = tmp_path / "clip.jpg"
    text.write_text("not a video")
    with pytest.raises(SourceError, match=f"OpenCV read no frame from {text}"):
        next(VideoFileSource(text).frames())


def test_a_live_source_path_that_does_not_exist_says_so(tmp_path):
    with pytest.raises(SourceError, match="no such file or folder"):
        open_source(str(tmp_path / "clip.mp4"))


def test_the_shipped_weights_pass_the_new_checks(demo):
    """The demo weights still load and score (the checks refuse nothing the kit writes)."""
    predictor = load(DEMO_WEIGHTS)
    table, landmarks = demo
    ok = np.flatnonzero(table["status"] == "ok")[:2]
    prob = predictor.predict_landmarks(landmarks[ok], table["width"].to_numpy()[ok], table["height"].to_numpy()[ok])
    assert prob.shape == (2, 2) and np.isfinite(prob).all()


# ----------------------------------------------------------------------------- warnings at the caller

def _aihub_with_broken_zips(root: Path) -> Path:
    """An AI Hub root with one readable image ZIP, one cut off, and a label ZIP cut off."""
    from builders import write_zip
    from facekit.demo import portrait

    name = f"{'a1' * 32}_여_20_불안_공공시설&종교&의료시설_20210202165501-001-007.jpg"
    good = write_zip(root / "Training" / "[원천]EMOIMG_불안_TRAIN_01.zip", {name: jpeg_bytes(portrait(64))})
    (root / "Training" / "[원천]EMOIMG_불안_TRAIN_02.zip").write_bytes(good.read_bytes()[:40])
    (root / "Training" / "[라벨]EMOIMG_불안_TRAIN.zip").write_bytes(good.read_bytes()[:40])
    return root


@pytest.mark.parametrize("entry", ["load_index", "index_aihub"])
def test_a_corrupt_zip_warning_points_at_the_callers_line(tmp_path, entry):
    """The warnings about unreadable ZIPs name the file and what to do, and are reported at the user's own
    call (this file), not inside facekit, whichever public entry point indexed the root."""
    from facekit.index import index_aihub

    root = _aihub_with_broken_zips(tmp_path / "aihub")
    call = {"load_index": load_index, "index_aihub": index_aihub}[entry]
    with pytest.warns(UserWarning) as caught:
        index = call(root)
    about_zips = [w for w in caught if "cannot read this" in str(w.message)]
    assert len(about_zips) == 2, [str(w.message) for w in caught]
    assert any("TRAIN_02.zip: cannot read this ZIP" in str(w.message) and "Re-download it" in str(w.message)
               for w in about_zips)
    assert any("[라벨]EMOIMG_불안_TRAIN.zip: cannot read this label ZIP" in str(w.message) for w in about_zips)
    assert {w.filename for w in about_zips} == {__file__}
    assert index["container"].str.endswith("TRAIN_02.zip").any()


def test_a_corrupt_zip_warning_can_still_be_made_an_error(tmp_path):
    root = _aihub_with_broken_zips(tmp_path / "aihub")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="cannot read this"):
            load_index(root)


# ----------------------------------------------------------------------------- checkpoint task and classes

@pytest.mark.parametrize("task, classes", [
    ("binary", ["neutral", "anxious", "happy"]),
    ("7class", ["neutral", "anxious"]),
    ("binary", ["rest", "anxious"]),
    ("anxious-vs-rest", ["neutral", "anxious"]),
    ("no-such-task", ["neutral", "anxious"]),
])
def test_a_checkpoint_whose_task_disagrees_with_its_classes_is_refused_without_expect(tmp_path, task, classes):
    path = _edited(tmp_path, lambda m: m.update(task=task, classes=classes))
    with pytest.raises(CheckpointError, match=f"task {task!r}") as err:
        load(path)
    message = str(err.value)
    assert path in message and str(classes) in message and "\n" not in message
    assert "etrain" in message or "re-export" in message


def test_the_shipped_checkpoints_still_load():
    for path in sorted((PROJECT_ROOT / "weights").glob("*.pt")):
        predictor = load(path)
        assert predictor.task == "binary" and predictor.classes == ("neutral", "anxious"), path


# ----------------------------------------------------------------------------- truncated checkpoints

@pytest.mark.parametrize("keep", [0.5, 0.99, 40])
def test_a_truncated_checkpoint_says_so_in_the_kits_words(tmp_path, keep):
    data = DEMO_WEIGHTS.read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: int(len(data) * keep) if keep < 1 else keep])
    with pytest.raises(CheckpointError) as err:
        load(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    assert "cut off" in message and ("copy" in message or "download" in message) and "retrain" in message
    for internal in ("PytorchStreamReader", "miniz", "RuntimeError", "central directory"):
        assert internal not in message
    assert err.value.__cause__ is not None  # torch's own error stays chained for debugging


def test_a_zip_that_is_not_a_checkpoint_says_so(tmp_path):
    import zipfile

    path = tmp_path / "photos.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.txt", "hello")
    with pytest.raises(CheckpointError, match="a ZIP archive but not a PyTorch checkpoint") as err:
        load(path)
    assert str(path) in str(err.value) and "PytorchStreamReader" not in str(err.value)


# ----------------------------------------------------------------------------- bytes changed inside a checkpoint

def test_a_checkpoint_with_bytes_changed_inside_is_refused(tmp_path):
    """torch.load does not check the ZIP's CRC-32s: 200 zeroed bytes in the middle of the weights loaded and
    scored as other weights.  The kit checks them and names the file, the damaged part and what to do."""
    blob = bytearray(DEMO_WEIGHTS.read_bytes())
    middle = len(blob) // 2
    blob[middle:middle + 200] = bytes(200)
    damaged = tmp_path / "copied.pt"
    damaged.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="fails its CRC check") as info:
        load(damaged)
    message = str(info.value)
    assert str(damaged) in message and "copy or download it again" in message and "\n" not in message
    assert load(DEMO_WEIGHTS).meta["task"] == "binary"  # the intact file still loads
