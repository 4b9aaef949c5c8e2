"""Stage 2, sample: a seeded, person-aware cap per container instead of "the first N files"."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facekit.sample import report, sample


def make_index(containers: dict[str, list[int]], emotion: str = "중립") -> pd.DataFrame:
    """``{container: [photos of person 0, photos of person 1, …]}`` → an index-like table."""
    rows = []
    for container, sizes in containers.items():
        for p, n in enumerate(sizes):
            for k in range(n):
                rows.append({"split": "Training", "container": container, "person": f"{container}-p{p}",
                             "emotion": emotion, "name": f"{container}-p{p}-{k}.jpg", "problem": None})
    return pd.DataFrame(rows)


def test_cap_per_container():
    """At most ``per_container`` rows from each container; smaller containers are kept whole."""
    index = make_index({"big": [30, 30, 30], "small": [3, 2]})
    kept = sample(index, per_container=20, seed=0)
    assert kept.groupby("container").size().to_dict() == {"big": 20, "small": 5}
    assert kept.index.is_unique and kept.index.isin(index.index).all()


def test_same_seed_same_rows_other_seed_other_rows():
    """Sampling is reproducible for a seed and changes with it."""
    index = make_index({"zip": [20] * 10})
    first = sample(index, per_container=10, seed=3)
    assert first.index.tolist() == sample(index, per_container=10, seed=3).index.tolist()
    assert first.index.tolist() != sample(index, per_container=10, seed=4).index.tolist()


def test_cap_spreads_over_people():
    """10 people × 20 photos with a cap of 10: one photo from every person, not 10 from the first."""
    index = make_index({"zip": [20] * 10})
    for seed in range(5):
        kept = sample(index, per_container=10, seed=seed)
        assert kept["person"].value_counts().to_dict() == {f"zip-p{p}": 1 for p in range(10)}


def test_rows_with_a_problem_are_never_sampled():
    """Rows whose ``problem`` is set never enter a sample, whatever the cap."""
    index = make_index({"zip": [5, 5]})
    index.loc[[0, 3, 7], "problem"] = "truncated"
    for cap in (None, 3, 100):
        kept = sample(index, per_container=cap, seed=1)
        assert kept["problem"].isna().all()
        assert not kept.index.isin([0, 3, 7]).any()
    assert len(sample(index, per_container=None)) == 7


def test_keeps_row_labels_and_columns():
    """The sample joins back onto the index by its row labels."""
    index = make_index({"zip": [4, 4, 4]})
    index.index = index.index + 1000
    kept = sample(index, per_container=5, seed=0)
    pd.testing.assert_frame_equal(kept, index.loc[kept.index])


def test_bad_cap():
    """A cap below 1 is refused."""
    with pytest.raises(ValueError, match="at least 1"):
        sample(make_index({"zip": [2]}), per_container=0)


def test_report_counts():
    """by_class: photos, people and what was available per split and emotion; by_person: photos each."""
    index = pd.concat([make_index({"neu": [6, 6, 6]}, "중립"), make_index({"anx": [2, 1]}, "불안")],
                      ignore_index=True)
    index.loc[0, "problem"] = "no face"
    kept = sample(index, per_container=6, seed=0)
    out = report(kept, index)
    by_class = out["by_class"].loc["Training"]
    assert by_class.loc["중립"].to_dict() == {"photos": 6, "people": 3, "available": 17}
    assert by_class.loc["불안"].to_dict() == {"photos": 3, "people": 2, "available": 3}
    by_person = out["by_person"]
    assert by_person.loc["neu-p1", "중립"] == 2 and by_person.loc["anx-p0", "불안"] == 2
    assert by_person.loc["anx-p0", "중립"] == 0
    assert "available" not in report(kept)["by_class"].columns


@settings(max_examples=150, deadline=None, database=None)
@given(sizes=st.lists(st.integers(1, 12), min_size=1, max_size=12), cap=st.integers(1, 60), seed=st.integers(0, 2**16))
def test_property_counts_are_balanced_over_people(sizes, cap, seed):
    """Drawing in rounds: exactly min(cap, available) rows; whenever the cap bites, two people's
    counts differ by more than 1 only if the smaller one gave every photo it had."""
    index = make_index({"zip": sizes})
    kept = sample(index, per_container=cap, seed=seed)
    assert len(kept) == min(cap, sum(sizes))
    counts = np.array([(kept["person"] == f"zip-p{p}").sum() for p in range(len(sizes))])
    available = np.array(sizes)
    assert (counts <= available).all()
    if cap < sum(sizes):
        for c, n in zip(counts, available):
            assert c == n or c >= counts.max() - 1
        if len(set(sizes)) == 1:  # equal groups: counts differ by at most 1
            assert counts.max() - counts.min() <= 1
