"""Property-based tests of the request decoders (Hypothesis), one property throughout: whatever the
body and content type, `decode_request` returns (H, W, 3) uint8 arrays within the caps, or raises a
BadRequest with a 4xx status; never another exception (the server would answer 500), and never a
large allocation for a body that claims more pixels than it is allowed.

Strategies: random bytes under every accepted and some unaccepted content types; generated images of
random sizes and modes encoded as PNG, JPEG, .npy and JSON base64, which must decode to the right
shape; headers declaring huge dimensions (PNG IHDR, JPEG SOF, .npy shapes) and real decompression
bombs (a small PNG that inflates to far more pixels than allowed), refused while memory stays small;
valid files truncated at any offset; hostile JSON (deep nesting, oversized integers).

Runs are deterministic (`derandomize=True`) and keep no example database, and Hypothesis's other caches
go to a temporary directory: CI writes no .hypothesis directory and a failure reproduces from the test
alone.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import struct
import tempfile
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from PIL import Image

from serve.codecs import ACCEPTED_TYPES, MAX_SIDE, BadRequest, cheap_to_decode, declared_size, decode_request

FAST = settings(
    max_examples=60,
    deadline=None,  # a shared 2-core runner stalls now and then; the suite's timeout bounds a hang
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
MAX_IMAGES = 4
# A bomb refused before decoding costs a few hundred KB of Python objects; a decoded one, the megabytes
# of its pixels. Both budgets sit far below the smallest bomb below (MAX_SIDE + 1 square, 16.8 MB gray).
PEAK_PY_BYTES = 4 * 1024 * 1024
PEAK_RSS_BYTES = 12 * 1024 * 1024


# Even with no example database, Hypothesis caches Unicode tables and the constants it harvests from the
# project's source on disk, in ./.hypothesis unless told otherwise; its pytest plugin does so while
# collecting, before any fixture runs, hence a module-level call. The cache is safe to share between runs.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "hypothesis-cv-mlops")


WRONG_TYPES = ("text/plain", "image/gif", "image/webp", "application/octet-stream", "multipart/form-data", "")
content_types = st.sampled_from(ACCEPTED_TYPES) | st.sampled_from(WRONG_TYPES) | st.none()


def check_outcome(content_type: str | None, body: bytes) -> list[np.ndarray] | None:
    """The property: decoded images within the caps, or None after a BadRequest with a 4xx."""
    try:
        images, parameters = decode_request(content_type, body, MAX_IMAGES)
    except BadRequest as exc:
        assert 400 <= exc.status < 500, (exc.status, exc.message)
        assert exc.message
        return None
    assert isinstance(parameters, dict)
    assert 1 <= len(images) <= MAX_IMAGES
    for image in images:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, image.shape
        assert min(image.shape[:2]) >= 1 and max(image.shape[:2]) <= MAX_SIDE, image.shape
    return images


def status_of(content_type: str | None, body: bytes) -> int:
    with pytest.raises(BadRequest) as info:
        decode_request(content_type, body, MAX_IMAGES)
    return info.value.status


# --- raw PNG and .npy writers, for headers PIL will not write ------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(
    width: int, height: int, idat: bytes, *, depth: int = 8, color: int = 0, extra: bytes = b""
) -> bytes:
    """A well-formed PNG (valid CRCs) whose IHDR claims `width` x `height`, whatever IDAT holds."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + extra
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def deflate_zeros(total: int, piece: int = 1 << 20) -> bytes:
    """zlib stream of `total` zero bytes, built piecewise so the test never holds them all."""
    compressor = zlib.compressobj(9)
    zeros = bytes(piece)
    out = [compressor.compress(zeros) for _ in range(total // piece)]
    out.append(compressor.compress(bytes(total % piece)))
    return b"".join([*out, compressor.flush()])


@functools.cache
def png_bomb(side: int) -> bytes:
    """A `side` x `side` all-black grayscale PNG: one filter byte plus `side` pixel bytes per row."""
    return raw_png(side, side, deflate_zeros(side * (side + 1)))


def npy_header(shape: tuple[int, ...], descr: str = "|u1") -> bytes:
    """A version 1.0 .npy header for `shape`, with no data after it."""
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode("latin1")
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def sample_jpeg() -> bytes:
    return encode(Image.new("RGB", (16, 12), (90, 160, 30)), "JPEG")


def with_jpeg_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its SOF0 frame header rewritten to claim `width` x `height`."""
    sof = jpeg.index(b"\xff\xc0")
    # SOF0: marker, 2-byte length, 1-byte precision, then height and width as big-endian 16 bits.
    return jpeg[: sof + 5] + struct.pack(">HH", height, width) + jpeg[sof + 9 :]


# --- memory measurement --------------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} missing from /proc/self/status")


@contextmanager
def peak_memory() -> Iterator[dict[str, int]]:
    """Peak growth while the block runs: `python` from tracemalloc (Python and NumPy allocations), `rss`
    from the kernel's high-water mark (PIL decodes into C buffers that tracemalloc never sees)."""
    measured: dict[str, int] = {}
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux 4.0+), so the mark is this block's.
    # Where the kernel refuses, the RSS figure reads 0 and only tracemalloc's is checked.
    try:
        Path("/proc/self/clear_refs").write_text("5")
        rss_before: int | None = _status_kb("VmRSS")
    except OSError:
        rss_before = None
    tracemalloc.start()
    try:
        yield measured
    finally:
        measured["python"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        measured["rss"] = 0 if rss_before is None else (_status_kb("VmHWM") - rss_before) * 1024


# --- random bytes ---------------------------------------------------------------------------------------


@FAST
@given(content_type=content_types, body=st.binary(max_size=2048))
def test_random_bytes_decode_or_are_refused_with_a_4xx(content_type: str | None, body: bytes) -> None:
    check_outcome(content_type, body)


@FAST
@given(
    content_type=content_types,
    magic=st.sampled_from(
        [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"\x93NUMPY\x01\x00", b'{"instances": [']
    ),
    tail=st.binary(max_size=512),
)
def test_bytes_behind_a_real_magic_number_decode_or_are_refused(
    content_type: str | None, magic: bytes, tail: bytes
) -> None:
    # Random bytes alone rarely get past a format's first check; behind its magic they reach the parser.
    check_outcome(content_type, magic + tail)


@FAST
@given(
    magic=st.sampled_from(
        [b"\x89PNG\r\n\x1a\n", b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR", b"\xff\xd8", b"\xff\xd8\xff"]
    ),
    tail=st.binary(max_size=512),
)
def test_the_header_reader_never_raises_and_reads_only_sizes(magic: bytes, tail: bytes) -> None:
    # It decides, on the event loop, whether a body is decoded there: it must survive any bytes.
    size = declared_size(magic + tail)
    assert size is None or (len(size) == 2 and all(0 <= side < 2**32 for side in size))
    assert cheap_to_decode("image/png", magic + tail, 256 * 256) in (True, False)


@FAST
@given(content_type=st.sampled_from(WRONG_TYPES) | st.none(), body=st.binary(min_size=1, max_size=64))
def test_unaccepted_content_types_are_415_whatever_the_body(content_type: str | None, body: bytes) -> None:
    assert status_of(content_type, body) == 415


# --- generated images round-trip ------------------------------------------------------------------------

sides = st.integers(1, 48)
pixel_arrays = st.tuples(sides, sides).flatmap(
    lambda hw: st.binary(min_size=hw[0] * hw[1] * 3, max_size=hw[0] * hw[1] * 3).map(
        lambda raw: np.frombuffer(raw, np.uint8).reshape(hw[0], hw[1], 3)
    )
)


@FAST
@given(pixels=pixel_arrays, mode=st.sampled_from(["1", "L", "LA", "P", "RGB", "RGBA", "I;16"]))
def test_png_of_any_mode_decodes_to_its_rgb_pixels(pixels: np.ndarray, mode: str) -> None:
    image = Image.fromarray(pixels).convert(mode) if mode != "I;16" else gray16(pixels[..., 0])
    [decoded] = check_outcome("image/png", encode(image, "PNG")) or pytest.fail("valid PNG refused")
    # 16 bits keep their high byte, as PIL does for 16-bit RGB; clipping would turn them white.
    gray = np.repeat(pixels[..., :1], 3, axis=-1)
    expected = gray if mode == "I;16" else np.asarray(image.convert("RGB"))
    np.testing.assert_array_equal(decoded, expected)


def gray16(gray: np.ndarray) -> Image.Image:
    """A 16-bit grayscale image whose high bytes are `gray` (and whose low bytes are not zero)."""
    return Image.fromarray((gray.astype(np.uint16) << 8) | 0x5A)


@FAST
@given(
    pixels=pixel_arrays,
    mode=st.sampled_from(["L", "RGB", "CMYK"]),
    quality=st.integers(5, 95),
    content_type=st.sampled_from(["image/jpeg", "application/x-image"]),
)
def test_jpeg_of_any_mode_decodes_to_its_size(
    pixels: np.ndarray, mode: str, quality: int, content_type: str
) -> None:
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, format="JPEG", quality=quality)
    [decoded] = check_outcome(content_type, buf.getvalue()) or pytest.fail("valid JPEG refused")
    assert decoded.shape == pixels.shape


@FAST
@given(
    count=st.integers(1, MAX_IMAGES),
    height=sides,
    width=sides,
    gray=st.booleans(),
    as_float=st.booleans(),
    batched=st.booleans(),
    data=st.data(),
)
def test_npy_arrays_decode_to_one_rgb_image_each(
    count: int, height: int, width: int, gray: bool, as_float: bool, batched: bool, data: st.DataObject
) -> None:
    # A batch of grayscale images 1, 3 or 4 pixels wide reads as one (H, W, C) image: the decoder's
    # documented choice, so such batches are not generated.
    assume(not (gray and batched and width in (1, 3, 4)))
    shape = (count, height, width) if gray else (count, height, width, 3)
    raw = data.draw(st.binary(min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    pixels = np.frombuffer(raw, np.uint8).reshape(shape)
    if not batched:
        pixels, count = pixels[0], 1
    array = pixels / 255.0 if as_float else pixels
    decoded = check_outcome("application/x-npy", npy(array)) or pytest.fail("valid .npy refused")
    assert len(decoded) == count
    expected = pixels.reshape(count, height, width, -1)
    for image, want in zip(decoded, expected, strict=True):
        np.testing.assert_array_equal(image, np.broadcast_to(want, (height, width, 3)))


@FAST
@given(
    images=st.lists(
        st.tuples(sides, sides, st.sampled_from(["PNG", "JPEG"])), min_size=1, max_size=MAX_IMAGES
    ),
    wrapped=st.booleans(),
    data_url=st.booleans(),
    line_length=st.sampled_from([0, 64, 76]),
)
def test_json_base64_instances_decode_in_order(
    images: list[tuple[int, int, str]], wrapped: bool, data_url: bool, line_length: int
) -> None:
    instances: list[object] = []
    for height, width, fmt in images:
        text = base64.b64encode(encode(Image.new("RGB", (width, height), (10, 200, 99)), fmt)).decode()
        if line_length:  # MIME-style line breaks, as some clients send
            text = "\n".join(text[i : i + line_length] for i in range(0, len(text), line_length))
        if data_url:
            text = f"data:image/{fmt.lower()};base64,{text}"
        instances.append({"b64": text} if wrapped else text)
    body = json.dumps({"instances": instances, "parameters": {"top_k": 1}}).encode()
    decoded = check_outcome("application/json", body) or pytest.fail("valid JSON refused")
    assert [image.shape for image in decoded] == [(h, w, 3) for h, w, _ in images]


# --- huge dimensions and decompression bombs -----------------------------------------------------------

huge_sides = st.tuples(st.integers(MAX_SIDE + 1, 2**31 - 1), st.integers(1, 2**31 - 1)).flatmap(
    lambda pair: st.sampled_from([pair, pair[::-1]])
)


def assert_refused_small(decoder: Callable[[], object], *, statuses: tuple[int, ...]) -> None:
    with peak_memory() as peak, pytest.raises(BadRequest) as info:
        decoder()
    assert info.value.status in statuses, info.value.message
    assert peak["python"] < PEAK_PY_BYTES, peak
    assert peak["rss"] < PEAK_RSS_BYTES, peak


@FAST
@given(size=huge_sides, color=st.sampled_from([(0, 8), (2, 8), (6, 8), (0, 16), (3, 8)]))
def test_png_header_claiming_huge_dimensions_is_refused_before_decoding(
    size: tuple[int, int], color: tuple[int, int]
) -> None:
    width, height = size
    kind, depth = color
    palette = png_chunk(b"PLTE", bytes(3 * 256)) if kind == 3 else b""
    body = raw_png(width, height, zlib.compress(bytes(4096)), depth=depth, color=kind, extra=palette)
    assert_refused_small(lambda: decode_request("image/png", body, MAX_IMAGES), statuses=(413,))


@FAST
@given(
    size=st.tuples(st.integers(MAX_SIDE + 1, 65535), st.integers(1, 65535)).flatmap(
        lambda pair: st.sampled_from([pair, pair[::-1]])
    )
)
def test_jpeg_frame_header_claiming_huge_dimensions_is_refused_before_decoding(size: tuple[int, int]) -> None:
    body = with_jpeg_size(sample_jpeg(), *size)
    assert declared_size(body) == size  # so it is never decoded on the event loop either
    assert_refused_small(lambda: decode_request("image/jpeg", body, MAX_IMAGES), statuses=(413,))


@FAST
@given(
    shape=st.one_of(
        st.tuples(st.integers(MAX_SIDE + 1, 2**40), st.integers(1, 64), st.just(3)),
        st.tuples(st.integers(1, 64), st.integers(MAX_SIDE + 1, 2**40)),
        st.tuples(st.integers(1, 2**20), st.integers(MAX_SIDE + 1, 2**20), st.integers(1, 64), st.just(3)),
        # Products past 2**63 wrap around in int64 arithmetic; none of them may slip past the size check.
        st.lists(st.integers(-(2**63), 2**64), min_size=1, max_size=5).map(tuple),
    ),
    descr=st.sampled_from(["|u1", "<f4", "<f8"]),
)
def test_npy_header_claiming_huge_shapes_is_refused_without_allocating(
    shape: tuple[int, ...], descr: str
) -> None:
    body = npy_header(shape, descr) + bytes(64)
    assert_refused_small(lambda: decode_request("application/x-npy", body, MAX_IMAGES), statuses=(400, 413))


@pytest.mark.parametrize("side", [MAX_SIDE + 1, 3 * MAX_SIDE])
def test_png_decompression_bomb_is_refused_before_inflating(side: int) -> None:
    body = png_bomb(side)
    inflated = side * (side + 1)
    assert len(body) * 500 < inflated  # really a bomb: at least 500 times smaller than what it inflates to
    assert_refused_small(lambda: decode_request("image/png", body, MAX_IMAGES), statuses=(413,))
    # The same bomb inside a JSON batch, behind a valid first image.
    small = base64.b64encode(encode(Image.new("RGB", (4, 4)), "PNG")).decode()
    batch = json.dumps({"instances": [small, base64.b64encode(body).decode()]}).encode()
    assert_refused_small(lambda: decode_request("application/json", batch, MAX_IMAGES), statuses=(413,))


def test_png_whose_pixel_data_inflates_past_its_header_decodes_only_what_the_header_claims() -> None:
    # IHDR says 8x8 but IDAT inflates to 64 MB: the decoder must stop at the pixels the header promised.
    body = raw_png(8, 8, deflate_zeros(64 * 1024 * 1024))
    assert len(body) < 100_000
    with peak_memory() as peak:
        outcome = check_outcome("image/png", body)
    assert outcome is None or [image.shape for image in outcome] == [(8, 8, 3)]
    assert peak["python"] < PEAK_PY_BYTES and peak["rss"] < PEAK_RSS_BYTES, peak


def test_png_text_chunk_bomb_is_refused_or_ignored_without_inflating() -> None:
    # A zTXt chunk inflating to 64 MB rides in front of a valid 4x4 image.
    ztxt = png_chunk(b"zTXt", b"Comment\x00\x00" + deflate_zeros(64 * 1024 * 1024))
    body = raw_png(4, 4, zlib.compress(bytes(4 * 5)), extra=ztxt)
    with peak_memory() as peak:
        outcome = check_outcome("image/png", body)
    assert outcome is None or [image.shape for image in outcome] == [(4, 4, 3)]
    assert peak["python"] < PEAK_PY_BYTES and peak["rss"] < PEAK_RSS_BYTES, peak


# --- truncation ------------------------------------------------------------------------------------------


def valid_pixels() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (20, 28, 3), dtype=np.uint8)


@functools.cache
def valid_bodies() -> dict[str, bytes]:
    pixels = valid_pixels()
    png = encode(Image.fromarray(pixels), "PNG")
    return {
        "image/png": png,
        "image/jpeg": encode(Image.fromarray(pixels), "JPEG"),
        "application/x-npy": npy(pixels),
        "application/json": json.dumps({"instances": [base64.b64encode(png).decode()]}).encode(),
    }


@FAST
@given(content_type=st.sampled_from(sorted(valid_bodies())), cut=st.floats(0.0, 1.0, exclude_max=True))
def test_valid_files_cut_at_any_offset_decode_or_are_refused(content_type: str, cut: float) -> None:
    body = valid_bodies()[content_type]
    truncated = body[: int(len(body) * cut)]
    outcome = check_outcome(content_type, truncated)
    if content_type in ("application/x-npy", "application/json"):
        # Both know the exact length they need: a shorter body is never accepted.
        assert outcome is None, f"{content_type} accepted {len(truncated)} of {len(body)} bytes"
    elif outcome is not None:
        # A PNG cut after its last pixel (in IEND) or a JPEG cut in its end marker may still decode, but
        # only to the whole image: never to a partial one padded with made-up pixels.
        [image] = outcome
        assert image.shape == (20, 28, 3)
        if content_type == "image/png":
            np.testing.assert_array_equal(image, valid_pixels())


@FAST
@given(
    content_type=st.sampled_from(sorted(valid_bodies())),
    cut=st.floats(0.0, 1.0, exclude_max=True),
    junk=st.binary(min_size=1, max_size=64),
)
def test_truncated_files_with_junk_appended_decode_or_are_refused(
    content_type: str, cut: float, junk: bytes
) -> None:
    body = valid_bodies()[content_type]
    check_outcome(content_type, body[: int(len(body) * cut)] + junk)


# --- hostile JSON ----------------------------------------------------------------------------------------


@FAST
@given(depth=st.integers(1, 200_000), opener=st.sampled_from(["[", '{"a":', '{"instances":[']))
def test_deeply_nested_json_is_refused_with_a_4xx(depth: int, opener: str) -> None:
    check_outcome("application/json", (opener * depth).encode())


@FAST
@given(digits=st.integers(4000, 20_000), where=st.sampled_from(["top", "instances", "parameters"]))
def test_json_with_huge_integers_is_refused_with_a_4xx(digits: int, where: str) -> None:
    number = "7" * digits
    body = {
        "top": number,
        "instances": f'{{"instances": [{number}]}}',
        "parameters": f'{{"instances": ["AAAA"], "parameters": {{"top_k": {number}}}}}',
    }[where]
    check_outcome("application/json", body.encode())


@FAST
@given(
    payload=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=20,
    ),
    key=st.sampled_from(["instances", "parameters", "other"]),
)
def test_json_of_any_structure_decodes_or_is_refused(payload: object, key: str) -> None:
    check_outcome("application/json", json.dumps({key: payload}).encode())
