"""S3 storage on moto: content-addressed dataset uploads, dry runs, and model.tar.gz round trips."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from artifact.manifest import verify
from infra.aws.errors import AwsError, NotFound
from infra.aws.plan import DryRunExecutor, LiveExecutor
from infra.aws.session import Aws
from infra.aws.storage import (
    UploadResult,
    channel_uris,
    dataset_prefix,
    download_dataset,
    download_file,
    download_model,
    parse_s3_uri,
    upload_dataset,
    upload_file,
    upload_model,
)
from infra.datasets import make_synthetic, read_metadata
from infra.errors import MlopsError, UsageError
from tests.factories import make_model_artifact

BUCKET = "demo-bucket"


def keys(aws: Aws, prefix: str = "") -> set[str]:
    pages = aws.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def local_files(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "shapes"
    make_synthetic(root, classes=2, train_per_class=3, val_per_class=1, test_per_class=1)
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built once: the factory imports torch, the slowest thing in this file.
    path = tmp_path_factory.mktemp("artifact") / "model"
    make_model_artifact(path, classes=("circle", "square"))
    return path


def upload(aws: Aws, root: Path, progress: Callable[[int, int], None] | None = None) -> UploadResult:
    return upload_dataset(
        aws, root, bucket=BUCKET, project="demo", executor=LiveExecutor(aws.client), progress=progress
    )


# --- URIs and prefixes ---------------------------------------------------------------------------


def test_s3_uris_split_into_bucket_and_key():
    assert parse_s3_uri("s3://demo-bucket/a/b/model.tar.gz") == ("demo-bucket", "a/b/model.tar.gz")


@pytest.mark.parametrize(
    "uri", ["demo-bucket/key", "s3://demo-bucket", "s3://demo-bucket/", "https://x/y", "s3:///key", ""]
)
def test_anything_but_an_s3_uri_with_a_key_is_a_usage_error(uri: str):
    with pytest.raises(UsageError, match="expected s3://BUCKET/KEY"):
        parse_s3_uri(uri)


def test_the_dataset_prefix_is_the_first_16_hex_digits_of_the_fingerprint():
    assert dataset_prefix("demo", "sha256:" + "0123456789abcdef" * 4) == "demo/datasets/0123456789abcdef/"


def test_channels_are_one_prefix_per_split():
    assert channel_uris("s3://b-1/demo/datasets/abc/") == {
        "train": "s3://b-1/demo/datasets/abc/train/",
        "validation": "s3://b-1/demo/datasets/abc/validation/",
        "test": "s3://b-1/demo/datasets/abc/test/",
    }


# --- datasets ------------------------------------------------------------------------------------


def test_upload_puts_every_file_under_the_content_addressed_prefix(aws: Aws, dataset: Path):
    seen: list[tuple[int, int]] = []
    result = upload(aws, dataset, progress=lambda done, total: seen.append((done, total)))

    files = local_files(dataset)
    meta = read_metadata(dataset)
    assert meta is not None
    prefix = dataset_prefix("demo", meta["fingerprint"])
    assert result.uri == f"s3://{BUCKET}/{prefix}"
    assert keys(aws) == {prefix + rel for rel in files}
    assert (result.files, result.uploaded, result.skipped) == (len(files), len(files), 0)
    assert result.bytes == sum(files.values())
    assert seen[-1] == (len(files), len(files))
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_an_unchanged_dataset_uploads_nothing_the_second_time(aws: Aws, dataset: Path):
    first = upload(aws, dataset)
    seen: list[tuple[int, int]] = []
    second = upload(aws, dataset, progress=lambda done, total: seen.append((done, total)))
    assert second.uri == first.uri
    assert (second.uploaded, second.skipped, second.bytes) == (0, first.files, 0)
    assert seen == [(first.files, first.files)]


def test_an_interrupted_upload_resumes_with_only_the_missing_files(aws: Aws, dataset: Path):
    first = upload(aws, dataset)
    _, prefix = parse_s3_uri(first.uri)
    lost = sorted(keys(aws, prefix))[0]
    aws.client("s3").delete_object(Bucket=BUCKET, Key=lost)
    again = upload(aws, dataset)
    assert (again.uploaded, again.skipped) == (1, first.files - 1)
    assert lost in keys(aws, prefix)


def test_a_changed_dataset_goes_to_a_new_prefix(aws: Aws, dataset: Path, tmp_path: Path):
    other = tmp_path / "other"
    make_synthetic(other, seed=1, classes=2, train_per_class=3, val_per_class=1, test_per_class=1)
    first, second = upload(aws, dataset), upload(aws, other)
    assert first.uri != second.uri
    assert second.uploaded == second.files
    assert len(keys(aws)) == first.files + second.files


def test_a_dataset_without_dataset_json_is_fingerprinted_from_its_files(aws: Aws, dataset: Path):
    meta = read_metadata(dataset)
    assert meta is not None
    (dataset / "dataset.json").unlink()
    result = upload(aws, dataset)
    assert result.uri == f"s3://{BUCKET}/" + dataset_prefix("demo", meta["fingerprint"])


def test_a_stray_object_under_the_prefix_fails_the_upload_check(aws: Aws, dataset: Path):
    meta = read_metadata(dataset)
    assert meta is not None
    prefix = dataset_prefix("demo", meta["fingerprint"])
    aws.client("s3").put_object(Bucket=BUCKET, Key=prefix + "train/stray.png", Body=b"x")
    with pytest.raises(AwsError, match=r"holds 12 objects but .* has 11 files"):
        upload(aws, dataset)


def test_a_dry_run_uploads_nothing_and_prints_one_plan_line(aws: Aws, dataset: Path):
    lines: list[str] = []
    executor = DryRunExecutor(emit=lines.append, clients=aws.client)
    result = upload_dataset(aws, dataset, bucket=BUCKET, project="demo", executor=executor)
    assert keys(aws) == set()
    assert result.uploaded == 0 and result.files == len(local_files(dataset))
    assert len(lines) == 1
    assert lines[0].startswith("s3.PutObject  # would upload 11 files")
    assert result.uri in lines[0]


def test_a_dry_run_after_an_upload_plans_nothing(aws: Aws, dataset: Path):
    upload(aws, dataset)
    lines: list[str] = []
    result = upload_dataset(
        aws, dataset, bucket=BUCKET, project="demo", executor=DryRunExecutor(emit=lines.append)
    )
    assert lines == [] and result.skipped == result.files


def test_a_missing_or_empty_directory_is_a_usage_error(aws: Aws, tmp_path: Path):
    with pytest.raises(UsageError, match="no dataset at"):
        upload(aws, tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no train/ directory"):
        upload(aws, tmp_path / "empty")
    (tmp_path / "empty" / "train").mkdir()
    with pytest.raises(UsageError, match="holds no files"):
        upload(aws, tmp_path / "empty")


def test_an_upload_to_a_missing_bucket_names_the_fix(aws: Aws, tmp_path: Path):
    path = tmp_path / "f.txt"
    path.write_text("x")
    with pytest.raises(AwsError, match=r"NoSuchBucket.*create it or fix MLOPS_BUCKET"):
        upload_file(aws, path, "s3://no-such-bucket/f.txt", LiveExecutor(aws.client))


# --- models --------------------------------------------------------------------------------------


def test_a_model_survives_the_round_trip_through_s3(aws: Aws, model_dir: Path, tmp_path: Path):
    uri = f"s3://{BUCKET}/demo/jobs/j1/output/model.tar.gz"
    assert upload_model(aws, model_dir, uri, LiveExecutor(aws.client)) == uri

    # SageMaker's layout: the files of /opt/ml/model at the root of the tar, nothing else.
    raw = download_file(aws, uri, tmp_path / "raw" / "model.tar.gz")
    with tarfile.open(raw, "r:gz") as tar:
        assert sorted(tar.getnames()) == ["manifest.json", "model.safetensors"]

    dest = download_model(aws, uri, tmp_path / "fresh")
    assert dest == tmp_path / "fresh"
    assert verify(dest) == verify(model_dir)


def test_uploading_a_model_twice_gives_the_same_bytes(aws: Aws, model_dir: Path, tmp_path: Path):
    executor = LiveExecutor(aws.client)
    upload_model(aws, model_dir, f"s3://{BUCKET}/a/model.tar.gz", executor)
    upload_model(aws, model_dir, f"s3://{BUCKET}/b/model.tar.gz", executor)
    s3 = aws.client("s3")
    etags = {s3.head_object(Bucket=BUCKET, Key=f"{k}/model.tar.gz")["ETag"] for k in "ab"}
    assert len(etags) == 1


def test_a_dry_run_model_upload_prints_the_put_and_uploads_nothing(aws: Aws, model_dir: Path):
    lines: list[str] = []
    upload_model(aws, model_dir, f"s3://{BUCKET}/m/model.tar.gz", DryRunExecutor(emit=lines.append))
    assert keys(aws) == set()
    assert len(lines) == 1 and '"Key": "m/model.tar.gz"' in lines[0]


def _put_tar(aws: Aws, key: str, members: dict[str, bytes]) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    aws.client("s3").put_object(Bucket=BUCKET, Key=key, Body=buf.getvalue())
    return f"s3://{BUCKET}/{key}"


def test_a_tar_that_escapes_its_directory_is_refused(aws: Aws, tmp_path: Path):
    uri = _put_tar(aws, "evil/model.tar.gz", {"manifest.json": b"{}", "../evil": b"owned"})
    dest = tmp_path / "out" / "model"
    with pytest.raises(
        MlopsError, match=r"refusing the model artifact at s3://demo-bucket/evil/model\.tar\.gz"
    ):
        download_model(aws, uri, dest)
    assert not (tmp_path / "out" / "evil").exists() and not (tmp_path / "evil").exists()
    assert not dest.exists()


def test_an_altered_model_is_refused(aws: Aws, model_dir: Path, tmp_path: Path):
    members = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    members["model.safetensors"] = members["model.safetensors"][:-1] + b"\0"
    uri = _put_tar(aws, "bad/model.tar.gz", members)
    with pytest.raises(MlopsError, match=r"failed verification.*does not match its sha256"):
        download_model(aws, uri, tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_a_missing_model_is_not_found_with_its_uri(aws: Aws, tmp_path: Path):
    uri = f"s3://{BUCKET}/demo/jobs/nope/output/model.tar.gz"
    with pytest.raises(NotFound, match=f"no model artifact at {uri}"):
        download_model(aws, uri, tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_a_model_is_not_extracted_over_other_files(aws: Aws, tmp_path: Path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("x")
    with pytest.raises(UsageError, match="neither empty nor a model directory"):
        download_model(aws, f"s3://{BUCKET}/m/model.tar.gz", tmp_path / "busy")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "x"


def test_downloading_again_replaces_the_earlier_model(aws: Aws, model_dir: Path, tmp_path: Path):
    uri = f"s3://{BUCKET}/demo/jobs/j1/output/model.tar.gz"
    upload_model(aws, model_dir, uri, LiveExecutor(aws.client))
    dest = download_model(aws, uri, tmp_path / "cache" / "j1")
    (dest / "model.safetensors").write_bytes(b"stale")
    download_model(aws, uri, dest)
    assert verify(dest) == verify(model_dir)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["j1"]  # no temporary leftovers


# --- datasets back from S3 (what a bare workflow job does before training, evaluating or deploying) ---


def test_a_downloaded_dataset_is_the_uploaded_one_and_uploads_again_as_nothing_new(aws, dataset, tmp_path):
    first = upload(aws, dataset)
    seen: list[tuple[int, int]] = []
    back = download_dataset(aws, first.uri, tmp_path / "back", progress=lambda d, t: seen.append((d, t)))
    assert local_files(tmp_path / "back") == local_files(dataset)
    assert (back.files, back.downloaded) == (first.files, first.files) and seen[-1] == (back.files,) * 2
    again = download_dataset(aws, first.uri, tmp_path / "back")
    assert again.downloaded == 0  # same sizes: nothing fetched twice
    assert upload(aws, tmp_path / "back").uri == first.uri  # the same content-addressed prefix


def test_only_the_splits_asked_for_are_downloaded(aws, dataset, tmp_path):
    uri = upload(aws, dataset).uri
    download_dataset(aws, uri, tmp_path / "test-only", splits=("test",))
    tops = {p.relative_to(tmp_path / "test-only").parts[0] for p in (tmp_path / "test-only").rglob("*")}
    assert "test" in tops and "train" not in tops and "validation" not in tops


def test_an_empty_or_unknown_prefix_is_a_clear_error_and_writes_nothing(aws, tmp_path):
    with pytest.raises(UsageError, match="no dataset files under s3://demo-bucket/demo/nothing/"):
        download_dataset(aws, f"s3://{BUCKET}/demo/nothing", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(UsageError, match="unknown split"):
        download_dataset(aws, f"s3://{BUCKET}/demo/nothing/", tmp_path / "out", splits=("holdout",))


def test_a_key_that_would_leave_the_target_directory_is_refused(aws, tmp_path):
    s3 = aws.client("s3")
    s3.put_object(Bucket=BUCKET, Key="evil/train/a/x.png", Body=b"x")
    s3.put_object(Bucket=BUCKET, Key="evil/train/../../escape.png", Body=b"x")
    with pytest.raises(UsageError, match="would leave"):
        download_dataset(aws, f"s3://{BUCKET}/evil/", tmp_path / "out")
    assert not (tmp_path / "escape.png").exists()


def test_mlops_data_prepare_downloads_an_s3_prefix_and_makes_a_built_in_one(aws, dataset, tmp_path, capsys):
    from infra.cli import main

    uri = upload(aws, dataset).uri
    code = main(["data", "prepare", uri, "--out", str(tmp_path / "p"), "--split", "test"])
    out = capsys.readouterr().out
    assert code == 0 and "downloaded" in out and (tmp_path / "p" / "test").is_dir()
    assert not (tmp_path / "p" / "train").exists()
    assert main(["data", "prepare", "synthetic", "--out", str(tmp_path / "syn")]) == 0
    assert (tmp_path / "syn" / "train").is_dir()
    assert main(["data", "prepare", "imagenet", "--out", str(tmp_path / "x")]) == 2
    assert "unknown dataset source 'imagenet'" in capsys.readouterr().err


# --- YOLO datasets -------------------------------------------------------------------------------


def test_a_yolo_dataset_uploads_and_downloads_back_identically(aws: Aws, tmp_path: Path):
    from infra.datasets import make_synthetic_yolo

    root = tmp_path / "yolo"
    make_synthetic_yolo(root, task="segmentation", train=4, val=2, test=2)
    assert not (root / "train").exists()  # images/train and labels/train, not an ImageFolder train/
    result = upload(aws, root)
    meta = read_metadata(root)
    assert meta is not None
    assert result.uri == f"s3://{BUCKET}/{dataset_prefix('demo', meta['fingerprint'])}"
    assert result.uploaded == result.files == len(local_files(root))
    back = download_dataset(aws, result.uri, tmp_path / "back")
    assert back.files == result.files
    original = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    copied = {
        p.relative_to(back.root).as_posix(): p.read_bytes() for p in back.root.rglob("*") if p.is_file()
    }
    assert copied == original
    assert "data.yaml" in copied and "labels/train/00000.txt" in copied
    assert upload(aws, back.root).uploaded == 0  # the same bytes find the same prefix


def test_a_yolo_dataset_without_images_is_refused(aws: Aws, tmp_path: Path):
    root = tmp_path / "empty"
    (root / "images" / "train").mkdir(parents=True)
    (root / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [a]\n")
    with pytest.raises(UsageError, match="holds no files"):
        upload(aws, root)
