"""infra.datasets: synthetic shapes and CIFAR-10 from small archives built here (real files, no mocks)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from infra.datasets import (
    CIFAR10_ARCHIVE_NAME,
    SPLITS,
    SYNTHETIC_CLASSES,
    DatasetError,
    fingerprint,
    make_synthetic,
    prepare_cifar10,
    read_metadata,
)
from infra.datasets.synthetic import _shape_mask

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SMALL: dict[str, Any] = {"classes": 3, "train_per_class": 4, "val_per_class": 2, "test_per_class": 2}


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def pngs(root: Path) -> list[Path]:
    return sorted(root.rglob("*.png"))


# --------------------------------------------------------------------------------------------------
# Synthetic
# --------------------------------------------------------------------------------------------------


def test_synthetic_layout_counts_and_metadata(tmp_path: Path) -> None:
    out = tmp_path / "shapes"
    messages: list[str] = []
    info = make_synthetic(out, seed=3, progress=messages.append, **SMALL)

    assert info.root == out
    assert info.name == "synthetic"
    assert info.created is True
    assert info.classes == sorted(SYNTHETIC_CLASSES[:3]) == ["circle", "square", "triangle"]
    assert info.counts == {"train": 12, "validation": 6, "test": 6}
    assert info.seconds >= 0
    for split in SPLITS:
        assert sorted(p.name for p in (out / split).iterdir()) == info.classes
        assert len(pngs(out / split)) == info.counts[split]
    for path in pngs(out):
        with Image.open(path) as img:
            assert (img.format, img.mode, img.size) == ("PNG", "RGB", (32, 32))
    assert any(m.startswith("writing train: 12/12") for m in messages)

    meta = read_metadata(out)
    assert meta is not None
    assert meta["name"] == "synthetic"
    assert meta["seed"] == 3
    assert meta["parameters"] == {**SMALL, "seed": 3, "size": 32}
    assert meta["classes"] == info.classes
    assert meta["counts"] == info.counts
    assert meta["generator_version"] >= 1
    assert meta["fingerprint"] == fingerprint(out)
    assert meta["fingerprint"].startswith("sha256:")
    # Nothing but the dataset itself: the temporary sibling is gone.
    assert [p.name for p in tmp_path.iterdir()] == ["shapes"]


def test_synthetic_is_byte_identical_per_seed(tmp_path: Path) -> None:
    first = make_synthetic(tmp_path / "a", seed=7, **SMALL)
    second = make_synthetic(tmp_path / "b", seed=7, **SMALL)
    other = make_synthetic(tmp_path / "c", seed=8, **SMALL)

    assert tree(first.root) == tree(second.root)
    assert tree(first.root).keys() == tree(other.root).keys()
    differing = [k for k, v in tree(first.root).items() if tree(other.root)[k] != v]
    assert len(differing) == len(pngs(first.root)) + 1  # every image, and dataset.json's seed and fingerprint


def test_synthetic_all_classes_and_size(tmp_path: Path) -> None:
    info = make_synthetic(
        tmp_path / "all", classes=10, train_per_class=1, val_per_class=1, test_per_class=1, size=48
    )
    assert info.classes == sorted(SYNTHETIC_CLASSES)
    assert len(set(SYNTHETIC_CLASSES)) == 10
    for path in pngs(info.root):
        with Image.open(path) as img:
            assert img.size == (48, 48)
            # Random colours and noise: no image is a flat fill.
            assert np.asarray(img).std() > 5


def test_a_class_keeps_its_images_whatever_the_number_of_classes(tmp_path: Path) -> None:
    small = make_synthetic(tmp_path / "two", classes=2, train_per_class=2, val_per_class=1, test_per_class=1)
    large = make_synthetic(tmp_path / "four", classes=4, train_per_class=2, val_per_class=1, test_per_class=1)
    for path in pngs(small.root):
        assert path.read_bytes() == (large.root / path.relative_to(small.root)).read_bytes()


@pytest.mark.parametrize("shape", SYNTHETIC_CLASSES)
def test_every_class_survives_a_horizontal_flip(shape: str) -> None:
    # Pixel centres symmetric about 0, so mirroring maps the grid onto itself exactly.
    coords = (np.arange(-48, 48) + 0.5) / 40
    mask = np.broadcast_to(_shape_mask(shape, coords[None, :], coords[:, None]), (96, 96))
    mirrored = mask[:, ::-1]
    assert mask.any()
    if shape == "checker":
        # A 4x4 board mirrors into the opposite phase: still a checkerboard of the same extent.
        patch = (np.abs(coords)[None, :] <= 0.9) & (np.abs(coords)[:, None] <= 0.9)
        assert np.array_equal(mirrored, patch & ~mask)
    else:
        assert np.array_equal(mirrored, mask)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"classes": 1}, "2 to 10 classes"),
        ({"classes": 11}, "2 to 10 classes"),
        ({"train_per_class": 0}, "at least 1 train image"),
        ({"size": 4}, "between 8 and 512"),
        ({"seed": -1}, "non-negative"),
    ],
)
def test_synthetic_rejects_bad_parameters(tmp_path: Path, kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(DatasetError, match=fragment):
        make_synthetic(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_reuse_then_force(tmp_path: Path) -> None:
    out = tmp_path / "shapes"
    first = make_synthetic(out, **SMALL)
    before = tree(out)
    messages: list[str] = []

    again = make_synthetic(out, progress=messages.append, **SMALL)
    assert again.created is False
    assert (again.classes, again.counts, again.root) == (first.classes, first.counts, out)
    assert messages == [f"reusing the existing synthetic dataset at {out}"]
    assert tree(out) == before

    with pytest.raises(DatasetError, match=r"different parameters.*--force"):
        make_synthetic(out, **{**SMALL, "train_per_class": 5})
    assert tree(out) == before

    replaced = make_synthetic(out, force=True, **{**SMALL, "train_per_class": 5})
    assert replaced.created is True
    assert replaced.counts["train"] == 15
    assert len(pngs(out / "train")) == 15
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]


def test_refuses_a_foreign_directory_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    with pytest.raises(DatasetError, match=r"already exists and is not a matching dataset; pass --force"):
        make_synthetic(out, **SMALL)
    assert (out / "notes.txt").read_text() == "precious"

    info = make_synthetic(out, force=True, **SMALL)
    assert info.created is True
    assert not (out / "notes.txt").exists()


def test_an_empty_directory_is_filled(tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    assert make_synthetic(out, **SMALL).created is True


def test_force_refuses_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "work.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError, match="refusing to replace"):
        make_synthetic(Path(), force=True, **SMALL)
    assert (tmp_path / "work.txt").exists()


def test_an_incomplete_dataset_is_not_reused(tmp_path: Path) -> None:
    out = tmp_path / "shapes"
    make_synthetic(out, **SMALL)
    pngs(out / "test")[0].unlink()
    with pytest.raises(DatasetError, match="incomplete"):
        make_synthetic(out, **SMALL)
    assert make_synthetic(out, force=True, **SMALL).counts["test"] == len(pngs(out / "test"))


class Interrupted(Exception):
    pass


def interrupt_at(prefix: str) -> Callable[[str], None]:
    def progress(message: str) -> None:
        if message.startswith(prefix):
            raise Interrupted(message)

    return progress


def test_an_interrupted_run_leaves_nothing_behind(tmp_path: Path) -> None:
    out = tmp_path / "shapes"
    with pytest.raises(Interrupted):
        make_synthetic(out, progress=interrupt_at("writing validation"), **SMALL)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_forced_run_keeps_the_old_dataset(tmp_path: Path) -> None:
    out = tmp_path / "shapes"
    make_synthetic(out, **SMALL)
    before = tree(out)
    with pytest.raises(Interrupted):
        make_synthetic(out, seed=1, force=True, progress=interrupt_at("writing test"), **SMALL)
    assert tree(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["shapes"]


# --------------------------------------------------------------------------------------------------
# CIFAR-10 from small archives in the official binary layout
# --------------------------------------------------------------------------------------------------


def cifar_records(per_class: int, rng: np.random.Generator) -> np.ndarray:
    labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)
    rng.shuffle(labels)
    pixels = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
    return np.concatenate([labels[:, None], pixels], axis=1)


def build_archive(
    path: Path,
    *,
    per_class_per_batch: int = 4,
    test_per_class: int = 3,
    names: list[str] | None = None,
    top: str = "cifar-10-batches-bin",
    skip: tuple[str, ...] = (),
    edit: dict[str, bytes] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Write a tar.gz laid out like cifar-10-binary.tar.gz; returns (train records, test records)."""
    rng = np.random.default_rng(0)
    batches = [cifar_records(per_class_per_batch, rng) for _ in range(5)]
    test = cifar_records(test_per_class, rng)
    files = {f"data_batch_{i + 1}.bin": b.tobytes() for i, b in enumerate(batches)}
    files["test_batch.bin"] = test.tobytes()
    files["batches.meta.txt"] = ("\n".join(names or CIFAR_NAMES) + "\n\n").encode()
    files.update(edit or {})
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            if name in skip:
                continue
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return np.concatenate(batches), test


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    path = tmp_path / "src" / "small-cifar.tar.gz"
    path.parent.mkdir()
    train, test = build_archive(path)
    return path, train, test


def test_cifar_counts_split_and_metadata(
    tmp_path: Path, archive: tuple[Path, np.ndarray, np.ndarray]
) -> None:
    path, train, _ = archive
    out = tmp_path / "data" / "cifar10"
    messages: list[str] = []
    info = prepare_cifar10(out, archive=path, expected_md5=None, progress=messages.append)

    assert (info.root, info.name, info.created) == (out, "cifar10", True)
    assert info.classes == CIFAR_NAMES
    # 20 training images per class: 10% (2 per class) to validation.
    assert info.counts == {"train": 180, "validation": 20, "test": 30}
    for split, per_class in (("train", 18), ("validation", 2), ("test", 3)):
        assert sorted(p.name for p in (out / split).iterdir()) == CIFAR_NAMES
        for name in CIFAR_NAMES:
            assert len(list((out / split / name).glob("*.png"))) == per_class
    train_rows = {int(p.stem) for p in pngs(out / "train")}
    validation_rows = {int(p.stem) for p in pngs(out / "validation")}
    assert train_rows.isdisjoint(validation_rows)
    assert train_rows | validation_rows == set(range(len(train)))
    assert any(m == "writing train: 180/180" for m in messages)

    meta = read_metadata(out)
    assert meta is not None
    assert meta["parameters"] == {
        "seed": 0,
        "validation_fraction": 0.1,
        "source_md5": hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest(),
    }
    assert meta["counts"] == info.counts
    assert meta["fingerprint"] == fingerprint(out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["cifar10"]


def test_cifar_pixels_round_trip(tmp_path: Path, archive: tuple[Path, np.ndarray, np.ndarray]) -> None:
    path, train, test = archive
    out = tmp_path / "cifar10"
    prepare_cifar10(out, archive=path, expected_md5=None)
    for split, records in (("train", train), ("validation", train), ("test", test)):
        for png in pngs(out / split)[::7]:
            record = records[int(png.stem)]
            assert png.parent.name == CIFAR_NAMES[record[0]]
            with Image.open(png) as img:
                assert (img.mode, img.size) == ("RGB", (32, 32))
                pixels = np.asarray(img)
            assert np.array_equal(pixels, record[1:].reshape(3, 32, 32).transpose(1, 2, 0))


def test_cifar_split_depends_only_on_seed(
    tmp_path: Path, archive: tuple[Path, np.ndarray, np.ndarray]
) -> None:
    path = archive[0]

    def validation(out: str, seed: int) -> set[str]:
        info = prepare_cifar10(tmp_path / out, archive=path, seed=seed, expected_md5=None)
        return {p.relative_to(info.root / "validation").as_posix() for p in pngs(info.root / "validation")}

    assert validation("a", 0) == validation("b", 0)
    assert validation("a", 0) != validation("c", 1)
    assert tree(tmp_path / "a") == tree(tmp_path / "b")


def test_cifar_reuse(tmp_path: Path, archive: tuple[Path, np.ndarray, np.ndarray]) -> None:
    out = tmp_path / "cifar10"
    prepare_cifar10(out, archive=archive[0], expected_md5=None)
    again = prepare_cifar10(out, archive=archive[0], expected_md5=None)
    assert again.created is False
    assert again.counts == {"train": 180, "validation": 20, "test": 30}
    with pytest.raises(DatasetError, match="different parameters"):
        prepare_cifar10(out, archive=archive[0], seed=1, expected_md5=None)


def test_cifar_class_names_come_from_the_meta_file(tmp_path: Path) -> None:
    names = [f"kind{i}" for i in range(10)]
    build_archive(tmp_path / "a.tar.gz", names=names)
    info = prepare_cifar10(tmp_path / "out", archive=tmp_path / "a.tar.gz", expected_md5=None)
    assert info.classes == names
    assert sorted(p.name for p in (info.root / "test").iterdir()) == names


def test_cifar_checks_the_md5_by_default(
    tmp_path: Path, archive: tuple[Path, np.ndarray, np.ndarray]
) -> None:
    with pytest.raises(DatasetError, match=r"md5 [0-9a-f]{32}, expected c32a1d4ab5d03f1284b67883e8d87530"):
        prepare_cifar10(tmp_path / "out", archive=archive[0])
    assert not (tmp_path / "out").exists()


def test_the_python_edition_is_refused(tmp_path: Path) -> None:
    named = tmp_path / "cifar-10-python.tar.gz"
    named.write_bytes(b"not even opened")
    with pytest.raises(DatasetError, match=r"Python \(pickle\) edition.*cifar-10-binary\.tar\.gz"):
        prepare_cifar10(tmp_path / "out", archive=named, expected_md5=None)

    renamed = tmp_path / "renamed.tar.gz"
    build_archive(renamed, top="cifar-10-batches-py")
    with pytest.raises(DatasetError, match=r"Python \(pickle\) edition"):
        prepare_cifar10(tmp_path / "out", archive=renamed, expected_md5=None)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        ({"skip": ("test_batch.bin",)}, r"lacks test_batch\.bin"),
        ({"skip": ("data_batch_3.bin", "batches.meta.txt")}, r"lacks batches\.meta\.txt, data_batch_3\.bin"),
        (
            {"edit": {"data_batch_2.bin": b"\x01" * 3074}},
            r"data_batch_2\.bin is 3074 bytes.*3073-byte records",
        ),
        ({"edit": {"test_batch.bin": b"\x0a" + b"\x00" * 3072}}, r"label 10; CIFAR-10 labels are 0-9"),
        ({"names": ["a", "b"]}, r"10 distinct class names"),
        ({"names": ["../up", *CIFAR_NAMES[1:]]}, r"unfit for directories"),
    ],
)
def test_a_malformed_archive_is_refused(tmp_path: Path, build: dict[str, object], fragment: str) -> None:
    path = tmp_path / "bad.tar.gz"
    build_archive(path, **build)  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match=fragment):
        prepare_cifar10(tmp_path / "out", archive=path, expected_md5=None)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", [b"", b"\x1f\x8b garbage", bytes(range(256)) * 100])
def test_a_corrupt_archive_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "corrupt.tar.gz"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=r"cannot read .*corrupt\.tar\.gz"):
        prepare_cifar10(tmp_path / "out", archive=path, expected_md5=None)


def test_a_truncated_archive_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cut.tar.gz"
    build_archive(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetError, match="cannot read"):
        prepare_cifar10(tmp_path / "out", archive=path, expected_md5=None)


def test_a_missing_archive_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        prepare_cifar10(tmp_path / "out", archive=tmp_path / "nope.tar.gz")


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's proxy settings must not route requests for 127.0.0.1 elsewhere.
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


@pytest.mark.usefixtures("no_proxy")
def test_an_unreachable_url_says_offline_quickly(tmp_path: Path, port: int) -> None:
    url = f"http://127.0.0.1:{port}/x.tar.gz"
    out = tmp_path / "data" / "cifar10"
    started = time.monotonic()
    with pytest.raises(DatasetError) as caught:
        prepare_cifar10(out, url=url, timeout=5)
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert message.startswith(f"cannot download CIFAR-10 from {url} (")
    assert (
        "this machine seems offline; download cifar-10-binary.tar.gz elsewhere and pass --archive PATH"
        in message
    )
    assert "\n" not in message
    assert not out.exists()
    assert list(out.parent.iterdir()) == []


def test_only_http_urls_are_fetched(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="only http:// and https://"):
        prepare_cifar10(tmp_path / "out", url="file:///etc/passwd")


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Serves tmp_path/www on 127.0.0.1; yields (base URL, served directory)."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", www
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.usefixtures("no_proxy")
def test_download_is_cached_and_reused(tmp_path: Path, http_server: tuple[str, Path]) -> None:
    base, www = http_server
    build_archive(www / "mirror.tar.gz")
    out = tmp_path / "data" / "cifar10"
    messages: list[str] = []

    info = prepare_cifar10(out, url=f"{base}/mirror.tar.gz", expected_md5=None, progress=messages.append)
    cache = out.parent / CIFAR10_ARCHIVE_NAME
    assert info.created is True
    assert cache.read_bytes() == (www / "mirror.tar.gz").read_bytes()
    assert any(m.startswith("downloading") for m in messages)
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(["cifar10", CIFAR10_ARCHIVE_NAME])

    # The server no longer has the file: a second dataset next to the first comes from the cache.
    (www / "mirror.tar.gz").unlink()
    other = prepare_cifar10(out.parent / "again", url=f"{base}/mirror.tar.gz", expected_md5=None)
    assert tree(other.root) == tree(out)


@pytest.mark.usefixtures("no_proxy")
def test_a_downloaded_dataset_is_reused_from_the_cache(tmp_path: Path, http_server: tuple[str, Path]) -> None:
    base, www = http_server
    build_archive(www / "mirror.tar.gz")
    out = tmp_path / "data" / "cifar10"
    prepare_cifar10(out, url=f"{base}/mirror.tar.gz", expected_md5=None)
    (www / "mirror.tar.gz").unlink()
    again = prepare_cifar10(out, url=f"{base}/mirror.tar.gz", expected_md5=None)
    assert again.created is False


@pytest.mark.usefixtures("no_proxy")
def test_an_official_dataset_is_reused_without_the_network(
    tmp_path: Path, archive: tuple[Path, np.ndarray, np.ndarray], port: int
) -> None:
    out = tmp_path / "data" / "cifar10"
    prepare_cifar10(out, archive=archive[0], expected_md5=None)
    # Make it look built from the official archive: reuse must then need neither archive nor network.
    meta_path = out / "dataset.json"
    meta = json.loads(meta_path.read_text())
    meta["parameters"]["source_md5"] = "c32a1d4ab5d03f1284b67883e8d87530"
    meta_path.write_text(json.dumps(meta))
    info = prepare_cifar10(out, url=f"http://127.0.0.1:{port}/x.tar.gz")
    assert info.created is False
    assert info.counts == {"train": 180, "validation": 20, "test": 30}
    assert not (out.parent / CIFAR10_ARCHIVE_NAME).exists()


def test_a_damaged_dataset_json_is_not_trusted(tmp_path: Path) -> None:
    out = tmp_path / "shapes"
    make_synthetic(out, **SMALL)
    meta = json.loads((out / "dataset.json").read_text())
    del meta["counts"]
    (out / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="incomplete"):
        make_synthetic(out, **SMALL)
    (out / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not a matching dataset"):
        make_synthetic(out, **SMALL)


@pytest.mark.usefixtures("no_proxy")
def test_a_download_with_the_wrong_md5_is_not_cached(tmp_path: Path, http_server: tuple[str, Path]) -> None:
    base, www = http_server
    build_archive(www / "mirror.tar.gz")
    out = tmp_path / "data" / "cifar10"
    with pytest.raises(DatasetError, match=r"downloaded from .* has md5"):
        prepare_cifar10(out, url=f"{base}/mirror.tar.gz")
    assert list(out.parent.iterdir()) == []


@pytest.mark.usefixtures("no_proxy")
def test_an_http_error_is_reported(tmp_path: Path, http_server: tuple[str, Path]) -> None:
    base, _ = http_server
    with pytest.raises(DatasetError, match=r"\(HTTP 404 .*pass --archive PATH"):
        prepare_cifar10(tmp_path / "data" / "cifar10", url=f"{base}/missing.tar.gz")


def test_metadata_is_plain_json(tmp_path: Path) -> None:
    info = make_synthetic(tmp_path / "s", **SMALL)
    text = (info.root / "dataset.json").read_text()
    assert json.loads(text)["name"] == "synthetic"
    assert text.endswith("\n")
