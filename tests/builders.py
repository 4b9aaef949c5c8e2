"""Builders for the tiny fixtures the tests make themselves: JPEGs with EXIF orientation,
ZIPs with CP949 member names (as AI Hub's), photos on canvases, and a shape distance.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112
# The stored pixels for each EXIF orientation, given the upright photo
# (a viewer that applies the tag turns them back upright).
_STORE = {1: None, 3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


class CP949Info(zipfile.ZipInfo):
    """A ZIP member whose name is stored as CP949 bytes with the UTF-8 flag clear, as AI Hub's are.

    Same trick as ``shared/tools/make_aihub_sample.py``.
    """

    def _encodeFilenameFlags(self):  # noqa: N802 - zipfile's name
        return self.filename.encode("cp949"), self.flag_bits & ~0x800


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    """Write ``members`` (real names → bytes) to ``path`` with CP949 names, no UTF-8 flag."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            info = CP949Info(name, date_time=(2021, 1, 26, 16, 55, 38))
            info.compress_type = zipfile.ZIP_STORED
            zf.writestr(info, data)
    return path


def jpeg_bytes(rgb: np.ndarray, orientation: int = 1, quality: int = 92) -> bytes:
    """An upright RGB array as JPEG bytes, stored rotated with EXIF ``orientation`` (1, 3, 6 or 8)."""
    im = Image.fromarray(rgb)
    if _STORE[orientation] is not None:
        im = im.transpose(_STORE[orientation])
    exif = Image.Exif()
    if orientation != 1:
        exif[EXIF_ORIENTATION] = orientation
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, exif=exif.tobytes())
    return buf.getvalue()


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def on_canvas(rgb: np.ndarray, size: tuple[int, int], at: tuple[int, int] = (0, 0), grey: int = 90) -> np.ndarray:
    """``rgb`` pasted at ``at`` (x, y) on a grey canvas of ``size`` (width, height)."""
    canvas = np.full((size[1], size[0], 3), grey, dtype=np.uint8)
    h, w = rgb.shape[:2]
    canvas[at[1]:at[1] + h, at[0]:at[0] + w] = rgb
    return canvas


def relative_rms(shape: np.ndarray, reference: np.ndarray) -> float:
    """RMS point distance between two (478, 3) shapes over the RMS norm of ``reference``."""
    return float(np.sqrt(((shape - reference) ** 2).sum(-1).mean()) / np.sqrt((reference ** 2).sum(-1).mean()))


# Debian's chromium, driven by playwright without a browser download (the browser tests of notebook 05
# and of the server's page).
from facekit.browser import CHROMIUM, missing_tools  # noqa: E402,F401  (CHROMIUM: for the tests; shared with the bench)


def require_browser_tools() -> None:
    """Skip the calling test, naming what is missing, without chromium, ffmpeg or playwright."""
    import pytest

    missing = missing_tools()
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed; ./kit test installs them")
