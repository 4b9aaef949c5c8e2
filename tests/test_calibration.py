"""Personal-neutral calibration: the reference of a photo never includes the photo itself."""
from __future__ import annotations

import numpy as np
import pytest

from facekit.calibration import personal_neutral, reference_shape


@pytest.fixture
def photos():
    """Distinct random shapes for three people, rows interleaved:
    ``a`` has 3 neutral + 2 other photos, ``b`` 1 neutral + 2 other, ``c`` no neutral photo."""
    persons = np.array(["a", "b", "a", "c", "a", "b", "a", "c", "b", "a"])
    neutral = np.array([1, 1, 0, 0, 1, 0, 1, 0, 0, 0], bool)
    shapes = np.random.default_rng(0).normal(size=(len(persons), 478, 3)).astype(np.float32)
    return shapes, persons, neutral


def test_delta_is_shape_minus_mean_of_the_other_neutral_photos(photos):
    shapes, persons, neutral = photos
    delta, usable = personal_neutral(shapes, persons, neutral)
    assert delta.shape == shapes.shape and delta.dtype == np.float32
    a_neutral = np.flatnonzero((persons == "a") & neutral)
    for i in np.flatnonzero(persons == "a"):
        others = [j for j in a_neutral if j != i]
        expected = shapes[i] - shapes[others].mean(axis=0)
        np.testing.assert_allclose(delta[i], expected, rtol=0, atol=1e-5)
        assert usable[i]
    # a neutral photo is never compared with a reference that contains itself
    for i in a_neutral:
        with_itself = shapes[i] - shapes[a_neutral].mean(axis=0)
        assert not np.allclose(delta[i], with_itself, atol=1e-3)


def test_changing_a_photo_does_not_move_its_own_reference(photos):
    shapes, persons, neutral = photos
    before, _ = personal_neutral(shapes, persons, neutral)
    moved = shapes.copy()
    moved[0] += 1.0  # row 0 is a neutral photo of a
    after, _ = personal_neutral(moved, persons, neutral)
    np.testing.assert_allclose(after[0] - before[0], 1.0, atol=1e-5)
    # … but it is part of the reference of every other photo of a, and of nobody else's
    for i in np.flatnonzero(persons == "a")[1:]:
        shift = 1.0 / (3 - int(neutral[i]))  # a's other neutral photos, or all 3
        np.testing.assert_allclose(after[i] - before[i], -shift, atol=1e-5)
    rest = persons != "a"
    np.testing.assert_array_equal(np.isnan(after[rest]), np.isnan(before[rest]))
    ok = rest & ~np.isnan(before).any(axis=(1, 2))
    np.testing.assert_array_equal(after[ok], before[ok])


def test_single_neutral_photo_serves_the_others_only(photos):
    shapes, persons, neutral = photos
    delta, usable = personal_neutral(shapes, persons, neutral)
    b = np.flatnonzero(persons == "b")
    own = b[neutral[b]][0]
    assert not usable[own] and np.isnan(delta[own]).all()
    for i in b[~neutral[b]]:
        assert usable[i]
        np.testing.assert_allclose(delta[i], shapes[i] - shapes[own], rtol=0, atol=1e-6)


def test_people_without_neutral_photos_are_unusable(photos):
    shapes, persons, neutral = photos
    delta, usable = personal_neutral(shapes, persons, neutral)
    c = persons == "c"
    assert not usable[c].any() and np.isnan(delta[c]).all()
    assert usable.sum() == 5 + 2  # all of a, b's two other photos


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
