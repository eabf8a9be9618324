"""Per-request settings: where they come from, and their ranges. Pure functions, no HTTP framework.

Each setting is looked up in order: the query string (`?conf=0.25`), then SageMaker's custom
attributes header (`X-Amzn-SageMaker-Custom-Attributes: conf=0.25,max_det=10`: InvokeEndpoint passes
no query string, so this is the way there), then a JSON body's `"parameters"` object, then the default.
A value out of range is a 400 that names the setting, its range and the value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from serve.codecs import BadRequest
from serve.yolo import DetectOptions

CLASSIFY_SETTINGS = ("top_k",)
DETECT_SETTINGS = ("conf", "iou", "max_det")
MAX_DETECTIONS = 1000

Source = Mapping[str, Any]


def custom_attributes(header: str | None) -> dict[str, str]:
    """`trace=abc, top_k=3` -> {"trace": "abc", "top_k": "3"} (names lower-cased; junk pairs skipped)."""
    pairs: dict[str, str] = {}
    for pair in (header or "").replace(";", ",").split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip():
            pairs.setdefault(key.strip().lower(), value)
    return pairs


def check_parameters(parameters: Source, accepted: Sequence[str]) -> None:
    """A JSON body's "parameters" may hold only settings this model takes: a typo is not ignored."""
    unknown = sorted(set(parameters) - set(accepted))
    if unknown:
        raise BadRequest(
            400, f'unknown "parameters": {", ".join(unknown)}; this model takes {", ".join(accepted)}'
        )


def requested_top_k(sources: Sequence[Source], *, default: int, num_classes: int) -> int:
    raw = _first(sources, "top_k")
    if raw is None:
        return default
    top_k = _integer("top_k", raw)
    if not 1 <= top_k <= num_classes:
        raise BadRequest(400, f"top_k must be between 1 and {num_classes} (the class count), got {top_k}")
    return top_k


def requested_detect_options(
    sources: Sequence[Source], defaults: DetectOptions | None = None
) -> DetectOptions:
    defaults = defaults or DetectOptions()
    conf = _fraction("conf", _first(sources, "conf"), defaults.conf)
    iou = _fraction("iou", _first(sources, "iou"), defaults.iou)
    raw = _first(sources, "max_det")
    max_det = defaults.max_det if raw is None else _integer("max_det", raw)
    if not 1 <= max_det <= MAX_DETECTIONS:
        raise BadRequest(400, f"max_det must be between 1 and {MAX_DETECTIONS}, got {max_det}")
    return DetectOptions(conf=conf, iou=iou, max_det=max_det)


def _first(sources: Sequence[Source], name: str) -> Any:
    for source in sources:
        if source.get(name) is not None:
            return source[name]
    return None


def _integer(name: str, raw: Any) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    try:
        if isinstance(raw, str):
            return int(raw.strip())
    except ValueError:
        pass
    raise BadRequest(400, f"{name} must be an integer, got {raw!r}")


def _fraction(name: str, raw: Any, default: float) -> float:
    """A number in (0, 1]: from a query string, a header or JSON (where true/false are not numbers)."""
    if raw is None:
        return default
    value: float | None = None
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            value = None
    if value is None or not math.isfinite(value):
        raise BadRequest(400, f"{name} must be a number, got {raw!r}")
    if not 0 < value <= 1:
        raise BadRequest(400, f"{name} must be greater than 0 and at most 1, got {raw!r}")
    return value
