"""Request bodies to RGB pixel arrays: pure functions, no model, no HTTP framework.

Stages: normalise the content type -> dispatch on it (single image, JSON batch of base64 images, or a
NumPy .npy array) -> refuse anything malformed, oversized or ambiguous with a `BadRequest` whose status
and message the server returns as they are -> a list of (H, W, 3) uint8 RGB arrays, plus, for a JSON
body, its optional `"parameters"` object (per-request settings; serve/options.py checks them).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
import tokenize
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.lib import format as npy_format
from PIL import Image, UnidentifiedImageError

IMAGE_TYPES = ("image/png", "image/jpeg", "application/x-image")
ACCEPTED_TYPES = (*IMAGE_TYPES, "application/json", "application/x-npy")
# Far above any classifier input, far below what a 6 MiB PNG can claim to decompress into.
MAX_SIDE = 4096
_NPY_SHAPES = "(H, W, 3), (N, H, W, 3), (H, W) or (N, H, W)"
# Peak memory of decoding one pixel with PIL: its own 4-byte pixels, a converted copy, then the RGB array.
DECODE_BYTES_PER_PIXEL = 8
# Called with the bytes an image is about to take while it is decoded, before decoding it; it may refuse
# with a BadRequest (the server's budget of decoded images in flight, serve/app.py).
Reserve = Callable[[int], None]
_WHITESPACE = re.compile(rb"\s+")


class BadRequest(Exception):
    """The client sent something we will not decode; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def media_type(content_type: str | None) -> str:
    """`Image/PNG; charset=binary` -> `image/png`; a missing header gives an empty string."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def check_content_type(content_type: str | None) -> str:
    """The media type, or a 415 naming the accepted ones (callable before the body is read)."""
    kind = media_type(content_type)
    if kind not in _DECODERS:
        got = f"Content-Type {kind!r}" if kind else "no Content-Type"
        raise BadRequest(415, f"unsupported media type: got {got}; send one of {', '.join(ACCEPTED_TYPES)}")
    return kind


def decode(content_type: str | None, body: bytes, max_images: int) -> list[np.ndarray]:
    """Decode one request body into (H, W, 3) uint8 RGB images, at most `max_images` of them."""
    return decode_request(content_type, body, max_images)[0]


def decode_request(
    content_type: str | None, body: bytes, max_images: int, reserve: Reserve | None = None
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """`decode`, plus the JSON body's `"parameters"` object ({} when there is none or no JSON). Each
    image's decoding memory is offered to `reserve` first, once its header has given its size."""
    kind = check_content_type(content_type)
    decoder = _DECODERS[kind]
    if not body:
        raise BadRequest(400, f"empty request body: send {kind} data")
    images, parameters = decoder(body, max_images, reserve or _unlimited)
    if len(images) > max_images:
        raise BadRequest(400, f"too many images: {len(images)} in one request, the limit is {max_images}")
    return images, parameters


def _unlimited(nbytes: int) -> None:
    pass


def decode_image(data: bytes, reserve: Reserve = _unlimited) -> np.ndarray:
    """A PNG or JPEG file to (H, W, 3) uint8 RGB; grayscale, palette and alpha images are converted."""
    try:
        # PIL warns (rather than raises) on large images; a warning here is a refusal, not a log line.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=("PNG", "JPEG")) as img:
                _check_size(*img.size)
                reserve(img.size[0] * img.size[1] * DECODE_BYTES_PER_PIXEL)  # before a pixel is decoded
                if img.mode.startswith("I;16"):
                    # 16-bit grayscale PNG: PIL's convert() clips every value above 255 to white instead
                    # of scaling; keep the high byte, as PIL itself does for 16-bit RGB.
                    gray = (np.asarray(img) >> 8).astype(np.uint8)
                    return np.repeat(gray[..., None], 3, axis=-1)
                rgb = img.convert("RGB")  # convert() forces the full decode, so truncation surfaces here
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise BadRequest(413, f"image refused as a decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise BadRequest(400, "body is not a readable PNG or JPEG image") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        # PIL reports truncated and corrupt streams as OSError, broken PNG chunks as SyntaxError.
        raise BadRequest(400, f"corrupt or truncated image: {exc}") from exc
    return np.asarray(rgb, dtype=np.uint8)


def cheap_to_decode(content_type: str, body: bytes, max_pixels: int) -> bool:
    """Whether `body` decodes to at most `max_pixels` pixels, judged from its header alone.

    A .npy body is uncompressed, so its size is its pixels' size; a PNG or JPEG declares its size in its
    header (a 50 KB PNG can declare 4096x4096), read here from the bytes themselves, or by PIL (which
    opens lazily) when they hold no header this reads. JSON bodies may hold any number of images and are
    never called cheap. A header that does not parse is cheap: decoding it fails at once."""
    kind = media_type(content_type)
    if kind == "application/x-npy":
        return len(body) <= max_pixels * 3
    if kind not in IMAGE_TYPES:
        return False
    size = declared_size(body)
    if size is None:
        try:
            with Image.open(io.BytesIO(body), formats=("PNG", "JPEG")) as img:
                size = img.size
        except Exception:  # noqa: BLE001 - any unreadable header: the decoder reports it properly
            return True
    return size[0] * size[1] <= max_pixels


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers, whose segment holds the size: C0-CF except DHT (C4), JPG (C8), DAC (CC).
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def declared_size(body: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk or a JPEG's start-of-frame segment, without decoding (a
    few microseconds, where PIL's lazy open takes tens); None when `body` starts with neither."""
    if body.startswith(_PNG_SIGNATURE):
        if body[12:16] == b"IHDR" and len(body) >= 24:
            return int.from_bytes(body[16:20], "big"), int.from_bytes(body[20:24], "big")
        return None
    return _jpeg_size(body) if body.startswith(b"\xff\xd8") else None


def _jpeg_size(body: bytes) -> tuple[int, int] | None:
    at = 2
    while at + 4 <= len(body):  # walk the segments: marker (FF xx), then a 2-byte length
        marker = body[at + 1]
        if body[at] != 0xFF or marker == 0xDA:  # not a marker, or the scan starts before any frame
            return None
        if marker == 0xFF:  # a fill byte before a marker
            at += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            at += 2
        elif marker in _JPEG_FRAMES:
            if at + 9 > len(body):
                return None
            return int.from_bytes(body[at + 7 : at + 9], "big"), int.from_bytes(body[at + 5 : at + 7], "big")
        else:
            at += 2 + int.from_bytes(body[at + 2 : at + 4], "big")
    return None


def warm_up() -> None:
    """Decode a tiny PNG and JPEG, so the first request does not pay for PIL's plugin imports (~20 ms)."""
    for fmt in ("PNG", "JPEG"):
        buf = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buf, format=fmt)
        decode_image(buf.getvalue())


def _check_size(width: int, height: int) -> None:
    if width > MAX_SIDE or height > MAX_SIDE:
        raise BadRequest(413, f"image is {width}x{height} pixels; the limit is {MAX_SIDE} per side")


_Decoded = tuple[list[np.ndarray], dict[str, Any]]


def _single_image(body: bytes, max_images: int, reserve: Reserve) -> _Decoded:
    return [decode_image(body, reserve)], {}


def _json_instances(body: bytes, max_images: int, reserve: Reserve) -> _Decoded:
    try:
        payload = json.loads(body)
    # ValueError: besides JSONDecodeError and UnicodeDecodeError, an integer past Python's 4300-digit
    # limit; RecursionError: arrays or objects nested a few thousand deep.
    except (ValueError, RecursionError) as exc:
        raise BadRequest(400, f"body is not valid JSON: {exc}") from exc
    instances = payload.get("instances") if isinstance(payload, dict) else None
    if instances is None:
        raise BadRequest(400, 'JSON body must be an object with "instances": [<base64 image>, ...]')
    if not isinstance(instances, list):
        raise BadRequest(400, f'"instances" must be a list, got {type(instances).__name__}')
    if not instances:
        raise BadRequest(400, '"instances" is empty: send at least one base64 image')
    if len(instances) > max_images:
        raise BadRequest(400, f"too many images: {len(instances)} in one request, the limit is {max_images}")
    parameters = payload.get("parameters")
    parameters = {} if parameters is None else parameters
    if not isinstance(parameters, dict):
        raise BadRequest(400, f'"parameters" must be an object, got {type(parameters).__name__}')
    images = []
    for index, instance in enumerate(instances):
        try:
            images.append(decode_image(_b64_instance(instance), reserve))
        except BadRequest as exc:
            raise BadRequest(exc.status, f"instances[{index}]: {exc.message}") from exc
    return images, parameters


def _b64_instance(instance: object) -> bytes:
    text = instance.get("b64") if isinstance(instance, dict) else instance
    if not isinstance(text, str):
        raise BadRequest(400, 'each instance must be a base64 string or {"b64": "<base64 string>"}')
    if text.startswith("data:") and "," in text:  # tolerate data URLs pasted from a browser
        text = text.split(",", 1)[1]
    try:
        # Strict alphabet check (validate=True) after dropping MIME-style line breaks.
        return base64.b64decode(_WHITESPACE.sub(b"", text.encode("ascii")), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise BadRequest(400, f"invalid base64: {exc}") from exc


def _npy_array(body: bytes, max_images: int, reserve: Reserve) -> _Decoded:
    array = _read_npy(body)
    shape = array.shape
    if array.ndim == 2 or (array.ndim == 3 and shape[-1] == 3):
        batch = array[None]  # one image: (H, W) or (H, W, 3)
    elif (array.ndim == 3 and shape[-1] not in (1, 4)) or (array.ndim == 4 and shape[-1] == 3):
        # (N, H, W) grayscale; a trailing 1 or 4 is far likelier a single-channel or RGBA image than
        # a batch of images 1 or 4 pixels wide, so those are refused rather than misread.
        batch = array
    else:
        raise BadRequest(400, f"wrong shape {shape}: accepted shapes are {_NPY_SHAPES}")
    if 0 in shape:
        raise BadRequest(400, f"wrong shape {shape}: an empty dimension holds no image")
    _check_size(width=batch.shape[2], height=batch.shape[1])
    if len(batch) > max_images:
        raise BadRequest(400, f"too many images: {len(batch)} in one request, the limit is {max_images}")
    reserve(math.prod(batch.shape[:3]) * 3)  # the uint8 RGB copy made from the body's array
    pixels = _npy_pixels(batch)
    if pixels.ndim == 3:  # grayscale to RGB
        pixels = np.repeat(pixels[..., None], 3, axis=-1)
    return [np.ascontiguousarray(image) for image in pixels], {}


def _read_npy(body: bytes) -> np.ndarray:
    fp = io.BytesIO(body)
    try:
        # Header first: object dtypes need pickle, and a header claiming more data than the body holds
        # would make read_array allocate the claimed size before noticing.
        major, _ = npy_format.read_magic(fp)
        reader = npy_format.read_array_header_1_0 if major == 1 else npy_format.read_array_header_2_0
        shape, _, dtype = reader(fp)
        if dtype.hasobject:
            raise BadRequest(400, "object arrays are refused: they need pickle; send a numeric array")
        # A real array has no dimension longer than its body unless another one is 0 (no image then);
        # past 2**63 numpy's own int64 product wraps around and warns, so refuse those first.
        if any(not 0 <= side <= len(body) for side in shape):
            raise BadRequest(400, f"impossible .npy shape {shape} for a body of {len(body)} bytes")
        claimed = math.prod(shape) * dtype.itemsize
        if claimed > len(body) - fp.tell():
            raise BadRequest(400, f"truncated .npy: shape {shape} needs {claimed} bytes of data")
        fp.seek(0)
        return npy_format.read_array(fp, allow_pickle=False)
    # numpy parses the header with Python's tokenizer: a corrupt one raises any of these, not ValueError.
    except (ValueError, SyntaxError, TypeError, OverflowError, tokenize.TokenError) as exc:
        if body.startswith(b"\x80"):
            raise BadRequest(400, "pickled data is refused: send a .npy array (numpy.save)") from exc
        raise BadRequest(400, f"not a readable .npy array: {exc}") from exc


def _npy_pixels(batch: np.ndarray) -> np.ndarray:
    if batch.dtype == np.uint8:
        return batch
    if np.issubdtype(batch.dtype, np.floating):
        if not (np.isfinite(batch).all() and batch.min() >= 0.0 and batch.max() <= 1.0):
            raise BadRequest(400, "float arrays must hold values in [0, 1] (no NaN or infinity)")
        return np.asarray(np.rint(batch.astype(np.float32) * 255.0), dtype=np.uint8)
    raise BadRequest(400, f"unsupported dtype {batch.dtype}: send uint8 (0-255) or float in [0, 1]")


_DECODERS: dict[str, Callable[[bytes, int, Reserve], _Decoded]] = {
    **dict.fromkeys(IMAGE_TYPES, _single_image),
    "application/json": _json_instances,
    "application/x-npy": _npy_array,
}
