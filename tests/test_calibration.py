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
