"""Personal-neutral calibration: the reference of a photo never includes the photo itself, and every scored
photo's reference averages as many neutral photos as every other of that person's."""
from __future__ import annotations

import numpy as np
import pytest

from facekit.calibration import personal_neutral, reference_shape


@pytest.fixture
def photos():
    """Distinct random shapes for four people, rows interleaved: ``a`` has 3 neutral + 2 other photos, ``b`` 1
    neutral + 2 other, ``c`` no neutral photo, ``d`` 2 neutral + 3 other."""
    persons = np.array(["a", "b", "a", "c", "a", "b", "a", "c", "b", "a", "d", "d", "d", "d", "d"])
    neutral = np.array([1, 1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 1, 0, 1, 0], bool)
    shapes = np.random.default_rng(0).normal(size=(len(persons), 478, 3)).astype(np.float32)
    return shapes, persons, neutral


def _references(delta, shapes, usable):
    """Which photos each usable row's reference averaged, and with what weight, read back from the delta of
    shapes that are unit vectors (row i: 1 at flat position i, 0 elsewhere)."""
    ref = shapes.reshape(len(shapes), -1) - delta.reshape(len(delta), -1)
    return {i: {int(j): round(float(ref[i, j]), 5) for j in np.flatnonzero(np.abs(ref[i, :len(shapes)]) > 1e-6)}
            for i in np.flatnonzero(usable)}


def test_every_reference_is_n_minus_1_of_the_persons_neutral_photos_never_the_photo(photos):
    _, persons, neutral = photos
    shapes = np.zeros((len(persons), 478, 3), np.float32)
    shapes.reshape(len(persons), -1)[np.arange(len(persons)), np.arange(len(persons))] = 1.0
    delta, usable = personal_neutral(shapes, persons, neutral)
    refs = _references(delta, shapes, usable)
    assert set(refs) == set(np.flatnonzero(np.isin(persons, ["a", "d"])))
    for i, ref in refs.items():
        own = np.flatnonzero((persons == persons[i]) & neutral)
        assert set(ref) <= set(own) and i not in ref
        assert len(ref) == len(own) - 1 and all(w == round(1 / (len(own) - 1), 5) for w in ref.values())
    # a neutral photo leaves out itself; the other photos leave out the person's neutral photos by turns
    a_n, d_n = np.flatnonzero((persons == "a") & neutral), np.flatnonzero((persons == "d") & neutral)
    assert [sorted(set(a_n) - set(refs[i])) for i in (2, 9)] == [[a_n[0]], [a_n[1]]]
    assert [sorted(set(d_n) - set(refs[i])) for i in (10, 12, 14)] == [[d_n[0]], [d_n[1]], [d_n[0]]]


def test_delta_is_shape_minus_reference(photos):
    shapes, persons, neutral = photos
    delta, usable = personal_neutral(shapes, persons, neutral)
    assert delta.shape == shapes.shape and delta.dtype == np.float32
    a_neutral = np.flatnonzero((persons == "a") & neutral)
    for i in a_neutral:
        others = [j for j in a_neutral if j != i]
        np.testing.assert_allclose(delta[i], shapes[i] - shapes[others].mean(axis=0), rtol=0, atol=1e-5)
    np.testing.assert_allclose(delta[2], shapes[2] - shapes[a_neutral[1:]].mean(axis=0), rtol=0, atol=1e-5)


def test_the_size_of_the_delta_does_not_tell_the_class():
    """Faces that differ by person and by photo-to-photo jitter only, with no expression at all: the size of a
    photo's delta must not tell a neutral photo from another.  (With a reference of all n neutral photos for the
    others and n − 1 for the neutral ones, it did: AUC 1.00 with two neutral photos a person.)"""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    n_people, n_neutral, n_other = 300, 2, 2
    per = n_neutral + n_other
    persons = np.repeat(np.arange(n_people), per)
    neutral = np.tile(np.arange(per) < n_neutral, n_people)
    shapes = rng.normal(size=(n_people, 1, 478, 3)) + 0.1 * rng.normal(size=(n_people, per, 478, 3))
    delta, usable = personal_neutral(shapes.reshape(-1, 478, 3).astype(np.float32), persons, neutral)
    assert usable.all()
    size = np.square(delta.astype(np.float64)).sum(axis=(1, 2))
    assert abs(roc_auc_score(~neutral, size) - 0.5) < 0.05


def test_people_with_fewer_than_two_neutral_photos_are_unusable(photos):
    shapes, persons, neutral = photos
    delta, usable = personal_neutral(shapes, persons, neutral)
    few = np.isin(persons, ["b", "c"])  # b has one neutral photo: it has no other to compare with, nor may theirs
    assert not usable[few].any() and np.isnan(delta[few]).all()
    assert usable.sum() == 5 + 5 and not np.isnan(delta[usable]).any()


def test_reference_shape():
    shapes = np.random.default_rng(1).normal(size=(4, 478, 3)).astype(np.float32)
    ref = reference_shape(shapes)
    assert ref.shape == (478, 3)
    np.testing.assert_allclose(ref, shapes.mean(axis=0), atol=1e-6)
    with pytest.raises(ValueError, match="at least one neutral"):
        reference_shape(np.zeros((0, 478, 3)))


def _identity_data(n_people=6, per=6, seed=1, noise=0.08):
    """Faces that differ by person along three symmetric shape directions, one of them partly the direction fear
    moves a face in (as a person with high brows at rest looks afraid), and by expression along that direction."""
    from facekit.train import _mirror_features

    rng = np.random.default_rng(seed)
    d = 478 * 3
    fear = rng.normal(size=d)
    fear = fear + _mirror_features(fear[None])[0]
    fear /= np.linalg.norm(fear)
    basis = rng.normal(size=(d, 3))
    basis = np.linalg.qr(basis + _mirror_features(basis.T).T)[0]
    basis[:, 0] = 0.6 * fear + 0.8 * basis[:, 0]
    basis = np.linalg.qr(basis)[0]
    X, y, persons = [], [], []
    for p in range(n_people):
        who = basis @ rng.normal(scale=3.0, size=3)
        for i in range(per):
            X.append(who + (i % 2) * fear + rng.normal(scale=noise, size=d))
            y.append(i % 2)
            persons.append(f"p{p}")
    return np.array(X, np.float32), np.array(y), np.array(persons), basis


def test_identity_directions_are_who_a_face_is_and_removing_them_commutes_with_mirroring():
    from facekit.calibration import identity_directions, remove_directions
    from facekit.train import _mirror_features

    X, y, persons, basis = _identity_data(n_people=12)
    V = identity_directions(X, y, persons, _mirror_features)
    assert V.shape[0] == X.shape[1] and 3 <= V.shape[1] <= 2 * 12 - 1
    np.testing.assert_allclose(V.T @ V, np.eye(V.shape[1]), atol=1e-9)
    # the three leading directions span the people's own shape directions, not noise
    overlap = np.linalg.svd(basis.T @ V[:, :3], compute_uv=False)
    assert overlap.min() > 0.98
    # without them the people's mean faces hardly differ along those directions; the expression is still there
    gone = remove_directions(X.astype(np.float64), V, 3)
    spread = lambda A: np.var([A[persons == p].mean(0) @ basis for p in np.unique(persons)], axis=0).sum()
    assert spread(gone) < 0.01 * spread(X.astype(np.float64))
    assert np.linalg.norm(gone[y == 1].mean(0) - gone[y == 0].mean(0)) > 0.5
    # a face is projected alone: the same in a batch or by itself, in the input's precision
    one = remove_directions(X[:1], V, 3)
    assert one.dtype == np.float32 and np.allclose(one, remove_directions(X, V, 3)[:1], atol=1e-5)
    # mirroring a face and then removing the directions, or the other way round, give the same face
    for k in (1, 3, V.shape[1]):
        a = remove_directions(_mirror_features(X.astype(np.float64)), V, k)
        b = _mirror_features(remove_directions(X.astype(np.float64), V, k))
        np.testing.assert_allclose(a, b, atol=1e-9)
    assert remove_directions(X, V, 0) is X and remove_directions(X, None) is X


def test_identity_directions_need_one_row_per_face():
    from facekit.calibration import identity_directions

    with pytest.raises(ValueError, match="one row per face"):
        identity_directions(np.zeros((4, 6)), [0, 1, 0, 1], ["a", "a", "b"])
