"""Seeded mutation fuzzing of the request decoders: valid PNG, JPEG, JSON and .npy bodies with bytes
flipped, cut, inserted and spliced, sent under every content type. Whatever arrives, a decoder answers
with RGB uint8 arrays within the size cap or a BadRequest with a 4xx status: never another exception
(which the server would turn into a 500), never a huge allocation."""

from __future__ import annotations

import base64
import io
import json
import random

import numpy as np
import pytest
from PIL import Image

from serve.codecs import ACCEPTED_TYPES, MAX_SIDE, BadRequest, decode_request

CASES = 1500  # per corpus entry and seed


def _seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
    out = []
    for fmt in ("PNG", "JPEG"):
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format=fmt)
        out.append(buf.getvalue())
    out.append(
        json.dumps({"instances": [base64.b64encode(out[0]).decode()], "parameters": {"top_k": 2}}).encode()
    )
    buf = io.BytesIO()
    np.save(buf, pixels, allow_pickle=False)
    out.append(buf.getvalue())
    return out


def _mutate(data: bytes, rng: random.Random) -> bytes:
    body = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        choice = rng.random()
        if choice < 0.3 and body:  # flip a bit
            i = rng.randrange(len(body))
            body[i] ^= 1 << rng.randrange(8)
        elif choice < 0.5 and body:  # cut the tail
            del body[rng.randrange(len(body)) :]
        elif choice < 0.7:  # insert random bytes
            i = rng.randrange(len(body) + 1)
            body[i:i] = rng.randbytes(rng.randint(1, 16))
        elif choice < 0.85 and body:  # overwrite with a boundary value (sizes, counts, dimensions)
            i = rng.randrange(len(body))
            body[i : i + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff"])
        elif body:  # duplicate a chunk
            i = rng.randrange(len(body))
            body[i:i] = body[i : i + rng.randint(1, 64)]
    return bytes(body)


@pytest.mark.parametrize("entry", range(4), ids=["png", "jpeg", "json", "npy"])
@pytest.mark.parametrize("seed", range(2))
def test_mutated_bodies_decode_or_are_refused_with_a_4xx(entry: int, seed: int) -> None:
    rng = random.Random(seed * 100 + entry)
    corpus = _seeds()[entry]
    for _ in range(CASES):
        body = _mutate(corpus, rng)
        content_type = rng.choice(ACCEPTED_TYPES)
        try:
            images, _parameters = decode_request(content_type, body, 8)
        except BadRequest as exc:
            assert 400 <= exc.status < 500 and exc.message, (content_type, body[:64])
            continue
        for image in images:
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            assert max(image.shape[:2]) <= MAX_SIDE, image.shape
