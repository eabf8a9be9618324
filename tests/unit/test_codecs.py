"""serve.codecs: every accepted content type decodes to RGB uint8, every bad input gets a named refusal."""

from __future__ import annotations

import base64
import io
import json
import pickle

import numpy as np
import pytest
from PIL import Image

from serve.codecs import MAX_SIDE, BadRequest, cheap_to_decode, declared_size, decode
from tests.factories import png_bytes


def encode(pixels: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
    image = Image.fromarray(pixels)
    if mode:
        image = image.convert(mode)
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def npy(array: np.ndarray, *, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def refusal(content_type: str | None, body: bytes, max_images: int = 8) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        decode(content_type, body, max_images)
    return info.value


@pytest.fixture
def pixels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)


# --- accepted inputs -------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["image/png", "IMAGE/PNG; charset=binary", "application/x-image"])
def test_png_decodes_losslessly(pixels: np.ndarray, content_type: str) -> None:
    [image] = decode(content_type, encode(pixels, "PNG"), 1)
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, pixels)


@pytest.mark.parametrize("content_type", ["image/jpeg", "application/x-image"])
def test_jpeg_decodes_to_rgb(content_type: str) -> None:
    flat = np.full((16, 16, 3), (200, 40, 40), dtype=np.uint8)
    [image] = decode(content_type, encode(flat, "JPEG"), 1)
    assert image.shape == (16, 16, 3)
    assert image.dtype == np.uint8
    assert np.abs(image.astype(int) - flat).max() < 8  # JPEG is lossy, but not that lossy


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_other_image_modes_become_rgb(pixels: np.ndarray, mode: str) -> None:
    [image] = decode("image/png", encode(pixels, "PNG", mode), 1)
    assert image.shape == (12, 20, 3)
    assert image.dtype == np.uint8


def test_grayscale_png_repeats_its_channel(pixels: np.ndarray) -> None:
    [image] = decode("image/png", encode(pixels, "PNG", "L"), 1)
    assert (image[..., 0] == image[..., 1]).all()
    assert (image[..., 1] == image[..., 2]).all()


def test_json_instances_as_strings_and_b64_objects(pixels: np.ndarray) -> None:
    png = encode(pixels, "PNG")
    text = base64.b64encode(png).decode()
    body = json.dumps({"instances": [text, {"b64": text}, "data:image/png;base64," + text]}).encode()
    images = decode("application/json", body, 3)
    assert len(images) == 3
    for image in images:
        np.testing.assert_array_equal(image, pixels)


def test_json_accepts_base64_with_line_breaks(pixels: np.ndarray) -> None:
    wrapped = base64.encodebytes(encode(pixels, "PNG")).decode()  # MIME style: a newline every 76 chars
    assert "\n" in wrapped
    [image] = decode("application/json", json.dumps({"instances": [wrapped]}).encode(), 1)
    np.testing.assert_array_equal(image, pixels)


def test_npy_uint8_image(pixels: np.ndarray) -> None:
    [image] = decode("application/x-npy", npy(pixels), 1)
    np.testing.assert_array_equal(image, pixels)


def test_npy_float_image_in_unit_range(pixels: np.ndarray) -> None:
    [image] = decode("application/x-npy", npy(pixels.astype(np.float32) / 255), 1)
    np.testing.assert_array_equal(image, pixels)


def test_npy_batch(pixels: np.ndarray) -> None:
    batch = np.stack([pixels, 255 - pixels, pixels // 2])
    images = decode("application/x-npy", npy(batch), 3)
    assert len(images) == 3
    for got, want in zip(images, batch, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape", [(12, 20), (4, 12, 20)])
def test_npy_grayscale_single_and_batch(shape: tuple[int, ...]) -> None:
    gray = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    images = decode("application/x-npy", npy(gray), 4)
    assert len(images) == (1 if len(shape) == 2 else shape[0])
    for image, plane in zip(images, gray.reshape(-1, 12, 20), strict=True):
        assert image.shape == (12, 20, 3)
        for channel in range(3):
            np.testing.assert_array_equal(image[..., channel], plane)


def test_max_images_is_inclusive() -> None:
    batch = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    assert len(decode("application/x-npy", npy(batch), 4)) == 4


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "image/gif", "application/octet-stream", "", None])
def test_unsupported_content_type_is_415_naming_accepted_types(content_type: str | None) -> None:
    error = refusal(content_type, png_bytes())
    assert error.status == 415
    assert "image/png" in error.message
    assert "application/x-npy" in error.message


@pytest.mark.parametrize("content_type", ["image/png", "application/json", "application/x-npy"])
def test_empty_body_is_400(content_type: str) -> None:
    error = refusal(content_type, b"")
    assert error.status == 400
    assert "empty" in error.message


def test_garbage_is_not_an_image() -> None:
    error = refusal("image/png", b"this is not a picture")
    assert error.status == 400
    assert "not a readable PNG or JPEG" in error.message


def test_corrupt_png_is_400(pixels: np.ndarray) -> None:
    png = bytearray(encode(pixels, "PNG"))
    start = png.index(b"IDAT") + 8
    png[start : start + 40] = bytes(40)  # zero the compressed pixel data: the chunk CRC no longer matches
    error = refusal("image/png", bytes(png))
    assert error.status == 400
    assert "corrupt or truncated" in error.message


def test_truncated_jpeg_is_400() -> None:
    noisy = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    jpeg = encode(noisy, "JPEG")
    error = refusal("image/jpeg", jpeg[: len(jpeg) // 2])
    assert error.status == 400
    assert "truncated" in error.message


def test_huge_image_is_refused_before_decoding() -> None:
    # A few hundred bytes of PNG claiming a picture wider than the limit.
    wide = encode(np.zeros((1, MAX_SIDE + 1, 3), dtype=np.uint8), "PNG")
    error = refusal("image/png", wide)
    assert error.status == 413
    assert f"{MAX_SIDE + 1}x1" in error.message


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", '"instances"'),
        (b'{"images": []}', '"instances"'),
        (b'{"instances": "abc"}', "must be a list"),
        (b'{"instances": []}', "empty"),
        (b'{"instances": [42]}', "base64 string"),
        (b'{"instances": [{"b64": 1}]}', "base64 string"),
        (b'{"instances": ["not base64!!"]}', "invalid base64"),
        (b'{"instances": ["aGVsbG8="]}', "instances[0]: body is not a readable PNG or JPEG image"),
    ],
)
def test_bad_json_is_400_with_a_reason(body: bytes, needle: str) -> None:
    error = refusal("application/json", body)
    assert error.status == 400
    assert needle in error.message


def test_json_names_the_bad_instance(pixels: np.ndarray) -> None:
    good = base64.b64encode(encode(pixels, "PNG")).decode()
    error = refusal("application/json", json.dumps({"instances": [good, "@@@"]}).encode())
    assert error.message.startswith("instances[1]: invalid base64")


@pytest.mark.parametrize(
    "shape",
    [(8,), (8, 8, 4), (8, 8, 1), (2, 8, 8, 4), (2, 3, 8, 8), (1, 2, 8, 8, 3), (0, 8, 8, 3), (8, 0)],
)
def test_npy_wrong_shape_names_received_and_accepted(shape: tuple[int, ...]) -> None:
    error = refusal("application/x-npy", npy(np.zeros(shape, dtype=np.uint8)))
    assert error.status == 400
    assert f"wrong shape {shape}" in error.message
    if 0 not in shape:
        assert "(N, H, W, 3)" in error.message


def test_npy_object_array_is_refused() -> None:
    body = npy(np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    error = refusal("application/x-npy", body)
    assert error.status == 400
    assert "object arrays are refused" in error.message


_UNPICKLED: list[str] = []


def _record_unpickling() -> None:
    _UNPICKLED.append("unpickled")


class _Trap:
    """Unpickling this calls _record_unpickling: proof that a decoder ran the pickle."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return _record_unpickling, ()


def test_pickle_is_refused_without_unpickling() -> None:
    error = refusal("application/x-npy", pickle.dumps({"pixels": _Trap()}))
    assert error.status == 400
    assert "pickled data is refused" in error.message
    assert _UNPICKLED == []


def test_npz_archive_is_refused() -> None:
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((8, 8, 3), dtype=np.uint8))
    error = refusal("application/x-npy", buf.getvalue())
    assert error.status == 400
    assert "not a readable .npy" in error.message


def test_npy_header_claiming_more_than_the_body_holds_is_400() -> None:
    body = npy(np.zeros((8, 8, 3), dtype=np.uint8))
    error = refusal("application/x-npy", body[:-10])
    assert error.status == 400
    assert "truncated" in error.message


@pytest.mark.parametrize(
    ("array", "needle"),
    [
        (np.full((4, 4, 3), 1.5, dtype=np.float32), "[0, 1]"),
        (np.full((4, 4, 3), np.nan, dtype=np.float64), "[0, 1]"),
        (np.zeros((4, 4, 3), dtype=np.int64), "unsupported dtype int64"),
        (np.zeros((4, 4, 3), dtype=bool), "unsupported dtype bool"),
    ],
)
def test_npy_bad_values_or_dtype(array: np.ndarray, needle: str) -> None:
    error = refusal("application/x-npy", npy(array))
    assert error.status == 400
    assert needle in error.message


def test_too_many_images_in_npy_and_json() -> None:
    error = refusal("application/x-npy", npy(np.zeros((5, 8, 8, 3), dtype=np.uint8)), max_images=4)
    assert error.status == 400
    assert "too many images: 5" in error.message
    text = base64.b64encode(png_bytes(8)).decode()
    error = refusal("application/json", json.dumps({"instances": [text] * 3}).encode(), max_images=2)
    assert error.status == 400
    assert "too many images: 3" in error.message
    assert "limit is 2" in error.message


def test_a_small_body_that_declares_many_pixels_is_not_decoded_on_the_event_loop() -> None:
    big = io.BytesIO()
    Image.new("RGB", (2048, 2048)).save(big, format="PNG")  # flat: compresses to a few KB
    assert len(big.getvalue()) < 64 * 1024
    assert not cheap_to_decode("image/png", big.getvalue(), 256 * 256)
    assert cheap_to_decode("image/png", png_bytes(), 256 * 256)
    assert cheap_to_decode("image/jpeg", encode(np.zeros((32, 32, 3), np.uint8), "JPEG"), 256 * 256)


@pytest.mark.parametrize(
    ("fmt", "mode", "save"),
    [
        ("PNG", "RGB", {}),
        ("PNG", "L", {}),
        ("PNG", "P", {}),
        ("PNG", "RGBA", {}),
        ("JPEG", "RGB", {}),
        ("JPEG", "L", {}),
        ("JPEG", "RGB", {"progressive": True}),
        ("JPEG", "RGB", {"exif": b"Exif\x00\x00" + bytes(3000)}),  # a large segment before the frame
    ],
)
def test_the_size_read_from_the_header_bytes_is_the_one_pil_reads(fmt: str, mode: str, save: dict) -> None:
    for width, height in [(1, 1), (37, 5), (300, 2000)]:
        buf = io.BytesIO()
        Image.new(mode, (width, height)).save(buf, format=fmt, **save)
        body = buf.getvalue()
        with Image.open(io.BytesIO(body)) as img:
            assert declared_size(body) == img.size == (width, height)


def test_a_header_the_byte_reader_does_not_know_is_judged_by_pil_or_called_cheap() -> None:
    assert declared_size(b"not an image") is None
    assert declared_size(png_bytes()[:20]) is None  # cut inside IHDR
    jpeg = encode(np.zeros((32, 32, 3), np.uint8), "JPEG")
    assert declared_size(jpeg[:30]) is None  # cut before the frame
    assert cheap_to_decode("image/jpeg", jpeg[:30], 256 * 256)  # fails at once when decoded
    # A JPEG padded with fill bytes before a marker still reads.
    padded = jpeg[:2] + b"\xff\xff" + jpeg[2:]
    assert declared_size(padded) == (32, 32)


def test_only_single_images_and_small_arrays_count_as_cheap_to_decode() -> None:
    assert not cheap_to_decode("application/json", b'{"instances": []}', 256 * 256)  # any number inside
    assert cheap_to_decode("application/x-npy", bytes(1000), 256 * 256)
    assert not cheap_to_decode("application/x-npy", bytes(256 * 256 * 3 + 1), 256 * 256)
    assert cheap_to_decode("image/png", b"not an image", 256 * 256)  # fails at once when decoded


def test_each_image_offers_its_decoding_memory_before_it_is_decoded() -> None:
    from serve.codecs import DECODE_BYTES_PER_PIXEL, decode_request

    asked: list[int] = []
    decode_request("image/png", png_bytes(32), 4, asked.append)
    assert asked == [32 * 32 * DECODE_BYTES_PER_PIXEL]
    asked.clear()
    text = base64.b64encode(encode(np.zeros((20, 10, 3), np.uint8), "PNG")).decode()
    decode_request("application/json", json.dumps({"instances": [text, text]}).encode(), 4, asked.append)
    assert asked == [20 * 10 * DECODE_BYTES_PER_PIXEL] * 2
    asked.clear()
    decode_request("application/x-npy", npy(np.zeros((3, 8, 6), dtype=np.float32)), 4, asked.append)
    assert asked == [3 * 8 * 6 * 3]  # the uint8 RGB copy


def test_a_refused_reservation_stops_the_decode_before_any_pixel() -> None:
    from serve.codecs import decode_request

    def refuse(nbytes: int) -> None:
        raise BadRequest(503, f"no room for {nbytes} bytes")

    big = io.BytesIO()
    Image.new("RGB", (2048, 2048)).save(big, format="PNG")
    with pytest.raises(BadRequest) as refused:
        decode_request("image/png", big.getvalue(), 4, refuse)
    assert refused.value.status == 503 and str(2048 * 2048 * 8) in refused.value.message
