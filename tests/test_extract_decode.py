"""Stage 3, extract: :func:`facekit.extract.decode` by either route gives Pillow's pixels.

Colour JPEGs are decoded by OpenCV (libjpeg-turbo, reduced scale), everything else
by Pillow.  These tests hold the OpenCV route to what Pillow's own
``ImageOps.exif_transpose`` makes of the same bytes, for all eight EXIF
orientations (written as real EXIF tags in both byte orders) and every scale, and
check the cases that must leave OpenCV: truncated, grey, CMYK, not JPEG.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

import facekit.extract as ex
from facekit.extract import PhotoError, decode, jpeg_scale

W, H = 803, 601  # not a multiple of 8: reduced sizes round up (libjpeg's ceil(W / scale))
#: The turn that stores an upright photo for each orientation (the inverse of what a viewer applies).
STORE = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
         4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
         7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}
#: draft_long_side → the scale it gives an 803-px photo
SCALES = {None: 1, 400: 2, 200: 4, 100: 8, 60: 8}


@pytest.fixture(scope="module")
def upright() -> np.ndarray:
    """An asymmetric (H, W, 3) photo: smooth gradients with a red block near the top-left corner."""
    y, x = np.mgrid[0:H, 0:W]
    rgb = np.stack([x * 255 // W, y * 255 // H, (x + 2 * y) % 256], axis=-1).astype(np.uint8)
    rgb[40:140, 60:300] = (255, 0, 0)
    return rgb


def stored_jpeg(rgb: np.ndarray, orientation: int, endian: str = ">", mode: str = "RGB", quality: int = 95) -> bytes:
    """``rgb`` stored turned, with a real EXIF Orientation tag that turns it upright again."""
    im = Image.fromarray(rgb).convert(mode)
    if STORE[orientation] is not None:
        im = im.transpose(STORE[orientation])
    exif = Image.Exif()
    exif.endian = endian
    exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, exif=exif.tobytes())
    return buf.getvalue()


def pillow_reference(data: bytes, scale: int) -> np.ndarray:
    """What Pillow alone makes of the bytes: draft at 1/scale, ``ImageOps.exif_transpose``, RGB."""
    im = Image.open(io.BytesIO(data))
    if scale > 1:
        im.draft("RGB", (im.size[0] // scale, im.size[1] // scale))
    return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


@pytest.fixture
def cv2_calls(monkeypatch) -> list:
    """Each call of the OpenCV route and whether it decoded (True) or handed over to Pillow (False)."""
    calls: list = []
    real = ex._decode_jpeg_cv2

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(ex, "_decode_jpeg_cv2", spy)
    return calls


@pytest.mark.parametrize("endian", ["<", ">"], ids=["II", "MM"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow(upright, orientation, endian, cv2_calls):
    """OpenCV's route, at every scale: Pillow's exif_transpose pixels exactly, the upright full size."""
    data = stored_jpeg(upright, orientation, endian)
    assert Image.open(io.BytesIO(data)).getexif()[0x0112] == orientation
    for draft_long_side, scale in SCALES.items():
        rgb, w, h = decode(data, draft_long_side)
        assert (w, h) == (W, H)
        assert rgb.shape == (-(-H // scale), -(-W // scale), 3) and rgb.dtype == np.uint8
        assert rgb.flags.c_contiguous
        np.testing.assert_array_equal(rgb, pillow_reference(data, scale), f"EXIF {orientation}, 1/{scale}")
    assert cv2_calls == [True] * len(SCALES)  # OpenCV decoded every one
    # and upright means upright: at full size the photo itself comes back (JPEG noise aside)
    full = decode(data, None)[0].astype(int)
    assert np.abs(full - upright).mean() < 3
    block = full[50:130, 70:290]  # the red block, inside the chroma blur at its edges
    assert (block[..., 0] > 200).all() and (block[..., 1:] < 60).all()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_pillow_route_gives_the_same_pixels(upright, orientation, monkeypatch):
    """With OpenCV out of the way (what a grey, CMYK or cut-off JPEG gets), Pillow's route agrees too."""
    data = stored_jpeg(upright, orientation)
    monkeypatch.setattr(ex, "_decode_jpeg_cv2", lambda *a, **k: None)
    for draft_long_side, scale in SCALES.items():
        rgb, w, h = decode(data, draft_long_side)
        assert (w, h) == (W, H)
        np.testing.assert_array_equal(rgb, pillow_reference(data, scale), f"EXIF {orientation}, 1/{scale}")


def test_jpeg_scale_rule():
    """The coarsest of 1/2, 1/4, 1/8 whose long side stays at least draft_long_side."""
    assert jpeg_scale((4032, 3024), 1024) == 2  # 2016 px; 1/4 would give 1008 < 1024
    assert jpeg_scale((3024, 4032), 1000) == 4
    assert jpeg_scale((4032, 3024), None) == jpeg_scale((4032, 3024), 0) == 1
    assert jpeg_scale((2048, 10), 1024) == 2 and jpeg_scale((2047, 2047), 1024) == 1
    assert jpeg_scale((8192, 6144), 1024) == 8 and jpeg_scale((640, 480), 1024) == 1


def test_jpeg_scale_rule_with_a_face_box():
    """A usable labelled box makes the scale coarser while its shorter side stays ≥ min_face_side, never finer."""
    size = (4032, 3024)
    assert jpeg_scale(size, 1024, (1000, 500, 2100, 1700), 256) == 4  # 1100 px: 275 at 1/4, 137 at 1/8
    assert jpeg_scale(size, 1024, (0, 0, 2100, 2100), 256) == 8  # 2100 px: 262 at 1/8
    assert jpeg_scale(size, 1024, (1000, 500, 1300, 800), 256) == 2  # a small face: never finer than the draft rule
    assert jpeg_scale(size, 1024, (1000, 500, 2100, 1700), None) == 2  # min_face_side None: boxes are ignored
    assert jpeg_scale(size, None, (0, 0, 2100, 2100), 256) == 1  # no draft: full size
    for degenerate in ((5, 5, 5, 900), (0, 0, 3000, 20), (np.nan, 0, 2100, 2100), (-50, -50, 5000, 5000)):
        assert jpeg_scale(size, 1024, degenerate, 256) == 2, degenerate


def test_a_phone_size_photo_decodes_at_half_scale_by_opencv(upright, cv2_calls):
    """4032×3024 stored turned (EXIF 6): 1/2 scale by OpenCV, upright, the size read from the header."""
    big = np.asarray(Image.fromarray(upright).resize((4032, 3024), Image.BILINEAR))
    data = stored_jpeg(big, 6, quality=90)
    rgb, w, h = decode(data, 1024)
    assert (w, h) == (4032, 3024) and rgb.shape == (1512, 2016, 3)
    assert cv2_calls == [True]
    np.testing.assert_array_equal(rgb, pillow_reference(data, 2))


@pytest.mark.parametrize("draft_long_side", [None, 1024])
@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.9])
def test_truncated_jpeg_is_unreadable(upright, draft_long_side, fraction, cv2_calls):
    """A JPEG cut off anywhere lacks its EOI marker: it goes to Pillow, which calls it truncated."""
    big = np.asarray(Image.fromarray(upright).resize((3000, 2250), Image.BILINEAR))
    data = stored_jpeg(big, 1, quality=90)
    with pytest.raises(PhotoError) as err:
        decode(data[: int(len(data) * fraction)], draft_long_side)
    assert err.value.status == "unreadable" and "truncated" in err.value.reason
    assert cv2_calls == [False]


def test_trailing_bytes_after_the_image_still_decode(upright, cv2_calls):
    """Data after the EOI marker (some phones append their own) leaves OpenCV out but still decodes."""
    data = stored_jpeg(upright, 6)
    padded = decode(data + b"\0" * 100, 400)[0]  # zero padding: still OpenCV
    trailer = decode(data + b"SEFHtrailer" * 10, 400)[0]  # a trailer: Pillow
    assert cv2_calls == [True, False]
    np.testing.assert_array_equal(padded, pillow_reference(data, 2))
    np.testing.assert_array_equal(trailer, padded)


@pytest.mark.parametrize("orientation", [1, 6])
def test_grey_jpeg_comes_out_as_rgb(upright, orientation, cv2_calls):
    data = stored_jpeg(upright, orientation, mode="L")
    assert Image.open(io.BytesIO(data)).mode == "L"
    rgb, w, h = decode(data, 400)
    assert rgb.shape == (301, 402, 3) and (w, h) == (W, H)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    np.testing.assert_array_equal(rgb, pillow_reference(data, 2))
    assert cv2_calls == []  # Pillow's route


def test_cmyk_jpeg_goes_to_pillow(upright, cv2_calls):
    data = stored_jpeg(upright, 8, mode="CMYK")
    rgb, w, h = decode(data, 400)
    assert rgb.shape == (301, 402, 3) and (w, h) == (W, H)
    np.testing.assert_array_equal(rgb, pillow_reference(data, 2))
    assert cv2_calls == []


@pytest.mark.parametrize("fmt", ["TIFF", "PNG", "WEBP"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_of_other_formats_comes_out_upright(upright, orientation, fmt, cv2_calls):
    """Lossless TIFF, PNG and WebP stored turned with an EXIF Orientation tag decode to the upright pixels at the
    upright size.  (Pillow's TIFF loader turns the photo upright itself and drops the tag: turning it again laid
    the face on its side, with width and height swapped.)"""
    im = Image.fromarray(upright)
    if STORE[orientation] is not None:
        im = im.transpose(STORE[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, fmt, exif=exif, **({"lossless": True} if fmt == "WEBP" else {}))
    rgb, w, h = decode(buf.getvalue(), 400)
    assert (w, h) == (W, H)
    np.testing.assert_array_equal(rgb, upright, f"{fmt}, EXIF {orientation}")
    assert cv2_calls == []


def test_png_and_not_an_image(upright, cv2_calls):
    buf = io.BytesIO()
    Image.fromarray(upright).save(buf, "PNG")
    rgb, w, h = decode(buf.getvalue(), 100)  # PNG: never reduced
    assert (w, h) == (W, H)
    np.testing.assert_array_equal(rgb, upright)
    for data in (b"", np.random.default_rng(0).bytes(5000)):
        with pytest.raises(PhotoError) as err:
            decode(data)
        assert err.value.status == "not_image"
    assert cv2_calls == []
