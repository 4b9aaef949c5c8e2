"""Shared fixtures: the demo portrait and the real datasets.

Tiny fixtures are made by the tests themselves in temporary folders (see
``builders.py``).  The real datasets (``facekit.paths.shared_datasets()``, env
``FACEKIT_SHARED_DATA``) are only read; tests that need one skip with a clear
reason where it is absent, as on a user's machine.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facekit import demo
from facekit.paths import shared_datasets


def _shared(name: str) -> Path:
    path = shared_datasets() / name
    if not path.is_dir():
        pytest.skip(f"real dataset {path} is absent (set FACEKIT_SHARED_DATA to the folder holding {name}/)")
    return path


@pytest.fixture(scope="session")
def portrait() -> np.ndarray:
    """(480, 480, 3) uint8: the astronaut's head from scikit-image (a real, public-domain face)."""
    return demo.portrait()


@pytest.fixture(scope="session")
def aihub_root() -> Path:
    return _shared("aihub_sample")


@pytest.fixture(scope="session")
def jaffe_root() -> Path:
    return _shared("jaffe")


@pytest.fixture(scope="session")
def ckplus_root() -> Path:
    return _shared("ckplus")
