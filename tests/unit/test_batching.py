"""The dynamic batcher: who shares a forward pass with whom, and how long anyone waits for it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serve.batching import Batcher, Work
from serve.yolo import Detection, DetectOptions

IMAGE = np.zeros((2, 2, 3), dtype=np.uint8)


class Model:
    """Answers each image with its request's setting; records every batch; can be held or broken."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []  # per call, the settings of the requests in it
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()

    def __call__(self, work: Sequence[Work]) -> list[list[dict[str, Any]]]:
        self.entered.set()
        self.release.wait(10)
        settings = [setting for _, setting in work]
        self.batches.append(settings)
        if "poison" in settings:
            raise RuntimeError("this input breaks the model")
        return [[{"setting": setting}] * len(images) for images, setting in work]


@pytest.fixture
def executor() -> Any:
    pool = ThreadPoolExecutor(max_workers=1)
    yield pool
    pool.shutdown(wait=True)


async def ask(batcher: Batcher, setting: Any, images: int = 1) -> list[dict[str, Any]]:
    arrival = batcher.arrival()
    try:
        return await arrival.submit([IMAGE] * images, setting)
    finally:
        arrival.close()


def test_a_lone_request_does_not_wait_for_company(executor: ThreadPoolExecutor) -> None:
    model = Model()
    batcher = Batcher(model, executor, max_size=32, max_wait=30.0)

    async def main() -> float:
        tick = time.perf_counter()
        assert await ask(batcher, "a") == [{"setting": "a"}]
        return time.perf_counter() - tick

    assert asyncio.run(main()) < 2.0  # not the 30 s max_wait: nobody else was on the way
    assert model.batches == [["a"]]


def test_requests_that_arrive_while_the_model_is_busy_share_its_next_pass(
    executor: ThreadPoolExecutor,
) -> None:
    model = Model()
    batcher = Batcher(model, executor, max_size=32, max_wait=0.0)

    async def main() -> list[list[dict[str, Any]]]:
        model.release.clear()
        first = asyncio.create_task(ask(batcher, "first"))
        await asyncio.to_thread(model.entered.wait, 10)  # the model is now busy with "first"
        rest = [asyncio.create_task(ask(batcher, f"r{i}")) for i in range(5)]
        await asyncio.sleep(0.05)
        model.release.set()
        return await asyncio.gather(first, *rest)

    answers = asyncio.run(main())
    assert [a[0]["setting"] for a in answers] == ["first", "r0", "r1", "r2", "r3", "r4"]
    assert model.batches == [["first"], ["r0", "r1", "r2", "r3", "r4"]]


def test_no_batch_holds_more_images_than_max_size(executor: ThreadPoolExecutor) -> None:
    model = Model()
    batcher = Batcher(model, executor, max_size=4, max_wait=0.0)

    async def main() -> None:
        model.release.clear()
        first = asyncio.create_task(ask(batcher, 0))
        await asyncio.to_thread(model.entered.wait, 10)
        rest = [asyncio.create_task(ask(batcher, i, images=2 if i % 3 else 1)) for i in range(1, 10)]
        await asyncio.sleep(0.05)
        model.release.set()
        await asyncio.gather(first, *rest)

    asyncio.run(main())
    sizes = [sum(2 if s % 3 else 1 for s in batch) for batch in model.batches]
    assert max(sizes) <= 4
    assert sorted(s for batch in model.batches for s in batch) == list(range(10))  # everyone answered once


def test_a_request_bigger_than_max_size_still_runs_alone(executor: ThreadPoolExecutor) -> None:
    model = Model()
    batcher = Batcher(model, executor, max_size=2, max_wait=0.0)
    answers = asyncio.run(ask(batcher, "big", images=5))
    assert len(answers) == 5
    assert model.batches == [["big"]]


def test_an_idle_model_waits_up_to_max_wait_for_requests_already_on_their_way(
    executor: ThreadPoolExecutor,
) -> None:
    model = Model()
    batcher = Batcher(model, executor, max_size=32, max_wait=5.0)

    async def main() -> None:
        late = batcher.arrival()  # admitted, still reading its body
        early = asyncio.create_task(ask(batcher, "early"))
        await asyncio.sleep(0.2)
        assert not early.done()  # held back for the request on its way
        assert await late.submit([IMAGE], "late") == [{"setting": "late"}]
        await early

    asyncio.run(main())
    assert model.batches == [["early", "late"]]


def test_a_request_that_gives_up_before_submitting_releases_the_wait(executor: ThreadPoolExecutor) -> None:
    model = Model()
    batcher = Batcher(model, executor, max_size=32, max_wait=30.0)

    async def main() -> float:
        doomed = batcher.arrival()  # e.g. its body turns out not to be an image
        early = asyncio.create_task(ask(batcher, "early"))
        await asyncio.sleep(0.1)
        tick = time.perf_counter()
        doomed.close()
        await early
        return time.perf_counter() - tick

    assert asyncio.run(main()) < 2.0
    assert model.batches == [["early"]]


def test_the_wait_for_stragglers_ends_at_max_wait(executor: ThreadPoolExecutor) -> None:
    model = Model()
    batcher = Batcher(model, executor, max_size=32, max_wait=0.3)

    async def main() -> float:
        batcher.arrival()  # on its way, and never arrives
        tick = time.perf_counter()
        await ask(batcher, "a")
        return time.perf_counter() - tick

    assert 0.25 < asyncio.run(main()) < 3.0


def test_callers_answered_together_are_waited_for_when_they_come_back_one_by_one(
    executor: ThreadPoolExecutor,
) -> None:
    model = Model()
    batcher = Batcher(model, executor, max_size=32, max_wait=5.0)

    async def main() -> float:
        arrivals = [batcher.arrival() for _ in range(3)]  # three callers, admitted together
        await asyncio.gather(*(a.submit([IMAGE], f"a{i}") for i, a in enumerate(arrivals)))

        async def again(i: int) -> None:  # each sends its next request as its answer comes back
            await asyncio.sleep(0.05 * i)
            await ask(batcher, f"b{i}")

        tick = time.perf_counter()
        await asyncio.gather(*(again(i) for i in range(3)))
        return time.perf_counter() - tick

    assert asyncio.run(main()) < 2.0  # waited for the three, not for max_wait
    assert model.batches == [["a0", "a1", "a2"], ["b0", "b1", "b2"]]


def test_the_wait_for_returning_callers_ends_at_max_wait(executor: ThreadPoolExecutor) -> None:
    model = Model()
    batcher = Batcher(model, executor, max_size=32, max_wait=0.3)

    async def main() -> float:
        arrivals = [batcher.arrival() for _ in range(3)]
        await asyncio.gather(*(a.submit([IMAGE], i) for i, a in enumerate(arrivals)))
        tick = time.perf_counter()
        await ask(batcher, "alone")  # the other two callers have gone
        return time.perf_counter() - tick

    assert 0.25 < asyncio.run(main()) < 3.0
    assert model.batches == [[0, 1, 2], ["alone"]]


def test_a_request_that_breaks_the_model_fails_alone(executor: ThreadPoolExecutor) -> None:
    model = Model()
    batcher = Batcher(model, executor, max_size=32, max_wait=0.0)

    async def main() -> list[Any]:
        model.release.clear()
        first = asyncio.create_task(ask(batcher, "first"))
        await asyncio.to_thread(model.entered.wait, 10)
        rest = [asyncio.create_task(ask(batcher, s)) for s in ("ok1", "poison", "ok2")]
        await asyncio.sleep(0.05)
        model.release.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    first, ok1, poison, ok2 = asyncio.run(main())
    assert ok1 == [{"setting": "ok1"}] and ok2 == [{"setting": "ok2"}] and first == [{"setting": "first"}]
    assert isinstance(poison, RuntimeError)
    # the shared pass failed, then each request was retried on its own
    assert model.batches == [["first"], ["ok1", "poison", "ok2"], ["ok1"], ["poison"], ["ok2"]]


def test_bad_settings_are_refused() -> None:
    with ThreadPoolExecutor(1) as pool, pytest.raises(ValueError, match="max_size"):
        Batcher(Model(), pool, max_size=0, max_wait=0.0)


class FakeDetector:
    """Finds one box per image whose score is the request's conf, so answers show whose options ran."""

    classes = ["shape"]

    def __init__(self) -> None:
        self.calls: list[tuple[int, DetectOptions]] = []

    def predict(self, images: list[np.ndarray], options: DetectOptions) -> list[list[Detection]]:
        self.calls.append((len(images), options))
        return [[Detection(box=(0, 0, 1, 1), score=options.conf, class_id=0)] for _ in images]


def test_a_detection_batch_runs_once_per_distinct_options_and_answers_in_request_order() -> None:
    from serve.app import _Detect

    detector = FakeDetector()
    task = _Detect(detector)  # type: ignore[arg-type]
    low, high = DetectOptions(conf=0.1), DetectOptions(conf=0.9)
    work: list[Work] = [([IMAGE], low), ([IMAGE, IMAGE], high), ([IMAGE], low)]
    answers = task.run(work)
    assert [[box["score"] for p in answer for box in p["boxes"]] for answer in answers] == [
        [0.1],
        [0.9, 0.9],
        [0.1],
    ]
    assert sorted(detector.calls, key=lambda call: call[1].conf) == [(2, low), (2, high)]


def test_a_classification_batch_answers_each_request_at_its_own_top_k(tmp_path: Path) -> None:
    from serve.app import _Classify
    from serve.predictor import Predictor
    from tests.factories import make_model_artifact

    make_model_artifact(tmp_path / "m", classes=("a", "b", "c", "d"))
    task = _Classify(Predictor.load(tmp_path / "m"))
    images = list(np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8))
    answers = task.run([([images[0]], 1), ([images[1], images[2]], 3)])
    assert [len(p["top_k"]) for answer in answers for p in answer] == [1, 3, 3]
    alone = task.run([([images[1]], 3)])
    shared, single = answers[1][0]["top_k"], alone[0][0]["top_k"]
    # As if it had run alone (value by value: random weights leave near-ties that rounding may reorder).
    assert [e["probability"] for e in shared] == pytest.approx([e["probability"] for e in single], abs=1e-5)
    own = {e["label"]: e["probability"] for e in single}
    assert all(
        e["probability"] == pytest.approx(own[e["label"]], abs=1e-5) for e in shared if e["label"] in own
    )


def test_each_request_learns_its_wait_in_the_queue_and_its_pass_time(executor: ThreadPoolExecutor) -> None:
    """What the request log prints as queue= and infer=: a request queued behind a busy pass waited about
    that pass's time, and both requests' passes took what the model took."""
    model = Model()
    batcher = Batcher(model, executor, max_size=1, max_wait=0.0)  # one request per pass

    async def timed(setting: str) -> tuple[float, float]:
        arrival = batcher.arrival()
        try:
            await arrival.submit([IMAGE], setting)
        finally:
            arrival.close()
        return arrival.queue_seconds, arrival.infer_seconds

    async def main() -> list[tuple[float, float]]:
        model.release.clear()
        first = asyncio.create_task(timed("first"))
        await asyncio.to_thread(model.entered.wait, 10)
        second = asyncio.create_task(timed("second"))  # queued while "first" holds the model
        await asyncio.sleep(0.3)
        model.release.set()
        return [await first, await second]

    (first_queue, first_infer), (second_queue, second_infer) = asyncio.run(main())
    assert first_queue < 0.25  # the model was idle: it started at once
    assert first_infer >= 0.29  # held by the test for 0.3 s
    assert second_queue >= 0.25  # waited for the first pass to end
    assert second_infer < 0.25  # the model was released by then
