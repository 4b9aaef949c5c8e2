"""Splits by person: no person on two sides, every row tested once, the official split without its leak."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facekit.index import index_aihub, shared_people
from facekit.split import official_split, person_folds, person_split


@st.composite
def groupings(draw, min_people: int = 2, max_people: int = 12):
    """A person id per row: ``min_people``..``max_people`` people, 1-6 photos each, shuffled."""
    n_people = draw(st.integers(min_people, max_people))
    sizes = draw(st.lists(st.integers(1, 6), min_size=n_people, max_size=n_people))
    groups = np.repeat([f"p{i:02d}" for i in range(n_people)], sizes)
    order = draw(st.permutations(list(range(len(groups)))))
    return groups[np.asarray(order, dtype=int)]


def _people(groups, mask) -> set:
    return set(np.asarray(groups)[mask])


@settings(max_examples=60, deadline=None)
@given(groups=groupings(min_people=3), seed=st.integers(0, 2**16), val=st.sampled_from([0.0, 0.15, 0.3]),
       test=st.sampled_from([0.0, 0.2, 0.4]))
def test_person_split_never_shares_a_person(groups, seed, val, test):
    role = person_split(groups, val_fraction=val, test_fraction=test, seed=seed)
    assert len(role) == len(groups)
    assert set(role) <= {"train", "val", "test"}
    for person in np.unique(groups):
        assert len(set(role[groups == person])) == 1, f"{person} is on two sides"
    assert (role == "train").any()
    assert (role == "test").any() == (test > 0)
    assert (role == "val").any() == (val > 0)
    again = person_split(groups, val_fraction=val, test_fraction=test, seed=seed)
    assert np.array_equal(role, again)


def test_person_split_fractions_are_of_people_not_photos():
    """One person with most of the photos counts as one person."""
    groups = np.array(["big"] * 100 + [f"p{i}" for i in range(19)])
    role = person_split(groups, val_fraction=0.15, test_fraction=0.2, seed=3)
    people = pd.Series(role).groupby(groups).first().value_counts()
    assert people["test"] == 4 and people["val"] == 3 and people["train"] == 13


def test_person_split_needs_two_people():
    with pytest.raises(ValueError, match="at least 2 people"):
        person_split(np.array(["a", "a", "a"]))


def _check_folds(groups, folds):
    n = len(groups)
    tested = np.zeros(n, int)
    for train, test in folds:
        assert len(np.intersect1d(train, test)) == 0
        assert len(train) + len(test) == n
        assert not _people(groups, train) & _people(groups, test)
        tested[test] += 1
    assert (tested == 1).all(), "every row is in exactly one test fold"
    # every person is tested in exactly one fold, with all their photos
    for person in np.unique(groups):
        holders = [k for k, (_, test) in enumerate(folds) if person in set(groups[test])]
        assert len(holders) == 1


@settings(max_examples=60, deadline=None)
@given(groups=groupings(), seed=st.integers(0, 2**16))
def test_loso_folds(groups, seed):
    folds = person_folds(groups, "loso", seed=seed)
    assert len(folds) == len(np.unique(groups))
    _check_folds(groups, folds)
    for _, test in folds:
        assert len(set(groups[test])) == 1


@settings(max_examples=60, deadline=None)
@given(data=st.data(), groups=groupings(), seed=st.integers(0, 2**16))
def test_k_folds(data, groups, seed):
    n_people = len(np.unique(groups))
    k = data.draw(st.integers(2, n_people))
    folds = person_folds(groups, k, seed=seed)
    assert len(folds) == k
    _check_folds(groups, folds)
    again = person_folds(groups, str(k), seed=seed)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(folds, again))


def test_k_folds_depend_on_the_seed():
    """People are shuffled before GroupKFold, so another seed gives other folds."""
    groups = np.repeat([f"p{i}" for i in range(12)], 3)
    layouts = {tuple(tuple(sorted(set(groups[te]))) for _, te in person_folds(groups, 3, seed=s)) for s in range(5)}
    assert len(layouts) > 1


@pytest.mark.parametrize("k", [1, 5])
def test_k_folds_out_of_range(k):
    with pytest.raises(ValueError, match="--folds"):
        person_folds(np.array(["a", "b", "c", "d"]), k)


def _toy_index() -> pd.DataFrame:
    """Training-only a..f, in both g and h, Validation-only v1..v3, and a broken member without a person."""
    rows = []
    for person, splits in {**{p: ["Training"] for p in "abcdef"}, "g": ["Training", "Validation"],
                           "h": ["Training", "Validation"], **{f"v{i}": ["Validation"] for i in (1, 2, 3)}}.items():
        for split in splits:
            for k in range(3 if split == "Validation" else 2):
                rows.append({"split": split, "person": person, "name": f"{person}_{split}_{k}.jpg", "problem": None})
    rows.append({"split": "Training", "person": None, "name": "Thumbs.db", "problem": "not an image"})
    return pd.DataFrame(rows)


def test_official_split_removes_people_in_both_from_test():
    table = _toy_index()
    role, info = official_split(table, val_fraction=0.25, seed=0)
    person, split = table["person"].to_numpy(), table["split"].to_numpy()
    assert set(person[role == "test"]) == {"v1", "v2", "v3"}
    assert info["people_in_both"] == 2
    assert info["test_photos_removed"] == 6  # g and h: 3 Validation photos each
    assert info["test_people"] == 3 and info["test_photos"] == 9
    # the leaked people's Validation photos are used nowhere; their Training photos may train or validate
    assert (role[(split == "Validation") & np.isin(person, ["g", "h"])] == "excluded").all()
    # val and train people are drawn from Training only, by person
    assert set(split[np.isin(role, ["train", "val"])]) == {"Training"}
    assert not _people(person, role == "train") & _people(person, role == "val")
    assert info["val_people"] == 2 and info["train_people"] == 6  # round(8 × 0.25) of the 8 Training people
    assert role[table["name"] == "Thumbs.db"][0] == "excluded"
    for r in ("train", "val", "test"):
        assert info[f"{r}_photos"] == int((role == r).sum())
    again, _ = official_split(table, val_fraction=0.25, seed=0)
    assert np.array_equal(role, again)


@pytest.fixture(scope="module")
def aihub_index(aihub_root):
    return index_aihub(aihub_root)


def test_official_split_on_real_aihub_sample(aihub_index):
    """The real sample: 6 people are in both folders, and none of them is tested on."""
    role, info = official_split(aihub_index, seed=0)
    leaked = shared_people(aihub_index)
    assert len(leaked) == 6 and info["people_in_both"] == 6
    person, split = aihub_index["person"].to_numpy(), aihub_index["split"].to_numpy()
    tested = _people(person, role == "test")
    assert tested and not tested & leaked
    assert not tested & _people(person, split == "Training")
    assert info["test_photos_removed"] == int(((split == "Validation") & np.isin(person, list(leaked))).sum()) > 0
    assert set(split[np.isin(role, ["train", "val"])]) == {"Training"}
    assert not _people(person, role == "train") & _people(person, role == "val")
    assert (role[aihub_index["problem"].notna().to_numpy()] == "excluded").all()
