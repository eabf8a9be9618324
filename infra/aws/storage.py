"""S3: datasets under content-addressed prefixes, model artifacts in SageMaker's model.tar.gz layout.

Datasets (`upload_dataset`), in stages:

1. check    the local directory is an ImageFolder dataset (`train/` at least) or a YOLO one
            (`data.yaml` and `images/`), else UsageError.
2. address  its fingerprint (dataset.json's, else computed) names the prefix
            `<project>/datasets/<16 hex>/`, so the same bytes always land in the same place.
3. diff     list what is already under the prefix; a key that exists with the same size is skipped,
            so an unchanged dataset uploads nothing and an interrupted upload resumes.
4. plan     dry run: one summarising `Call` goes to the executor and nothing is uploaded.
5. upload   live: the remaining files in a thread pool, `progress(done, total)` after each one.
6. verify   the prefix must hold exactly as many objects as the directory holds files.

Live uploads call the S3 client directly (`upload_file`, multipart for large files) instead of sending
one `Call` per object through the executor: a dataset is thousands of PutObject requests, and a plan
that lists each of them would bury everything else. The dry run prints one honest summary instead.

Models: `upload_model` tars a model directory the way SageMaker does (the contents of /opt/ml/model at
the tar root); `download_model` fetches one, extracts it with tarfile's "data" filter (no absolute paths,
no `..`, no links out, no devices) and verifies every file against the manifest before returning.
"""

from __future__ import annotations

import gzip
import re
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boto3.exceptions import Boto3Error, S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from artifact.manifest import MANIFEST_NAME, ArtifactError, verify
from infra.aws.errors import AwsError, NotFound, aws_errors, translate
from infra.aws.plan import Call, Executor
from infra.aws.session import Aws
from infra.concurrency import cancelling_pool
from infra.datasets.common import SPLITS, fingerprint, read_metadata
from infra.errors import MlopsError, UsageError

# A bucket name as S3 allows it (3-63 lowercase letters, digits, dots, hyphens); the key is anything.
_S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(?P<key>.+)$")

# The dataset pool already runs `max_workers` uploads at once; letting each of them start its own
# transfer threads as well would multiply the connections (16 x 10) for no gain on small PNGs.
_SERIAL = TransferConfig(use_threads=False)

Progress = Callable[[int, int], None]


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/key` -> (bucket, key); anything else is a UsageError that shows the expected form."""
    match = _S3_URI.match(uri.strip()) if isinstance(uri, str) else None
    if match is None:
        raise UsageError(
            f"not an S3 URI: {uri!r}; expected s3://BUCKET/KEY (a lowercase bucket name, then a key)"
        )
    return match["bucket"], match["key"]


def dataset_prefix(project: str, fingerprint: str) -> str:
    """Where a dataset with this fingerprint lives: `<project>/datasets/<first 16 hex digits>/`.

    The `sha256:` algorithm label is dropped first: cutting `fingerprint[:16]` straight off
    "sha256:..." would keep only 9 hex digits and put a colon in every key.
    """
    digest = fingerprint.split(":", 1)[-1].lower()
    if not project or "/" in project:
        raise UsageError(
            f"project name {project!r} cannot name an S3 prefix: use a non-empty name without '/'"
        )
    if len(digest) < 16 or not re.fullmatch(r"[0-9a-f]+", digest):
        raise UsageError(f"dataset fingerprint {fingerprint!r} is not a hex digest (expected sha256:<hex>)")
    return f"{project}/datasets/{digest[:16]}/"


def channel_uris(dataset_uri: str) -> dict[str, str]:
    """The SageMaker input channels of an uploaded dataset: one S3 prefix per split."""
    parse_s3_uri(dataset_uri)
    base = dataset_uri if dataset_uri.endswith("/") else dataset_uri + "/"
    return {split: f"{base}{split}/" for split in SPLITS}


@dataclass
class UploadResult:
    uri: str  # s3://bucket/<project>/datasets/<hex>/ : what channel_uris() takes
    files: int  # files in the local dataset (dataset.json included)
    uploaded: int  # files sent this time (0 in a dry run)
    skipped: int  # files already under the prefix with the same size
    bytes: int  # bytes sent this time (0 in a dry run)
    seconds: float


def upload_dataset(
    aws: Aws,
    local_dir: Path,
    *,
    bucket: str,
    project: str,
    executor: Executor,
    progress: Progress | None = None,
    max_workers: int = 16,
) -> UploadResult:
    """Upload an ImageFolder dataset under its content-addressed prefix; see the module docstring.

    `progress(done, total)` counts files of the whole dataset: the skipped ones are done at the first
    call, then each upload adds one, so it always ends at (total, total) in a live run.
    """
    started = time.perf_counter()
    root = _dataset_root(local_dir)
    if max_workers < 1:
        raise UsageError(f"max_workers must be at least 1, not {max_workers}")
    meta = read_metadata(root) or {}
    recorded = meta.get("fingerprint")
    prefix = dataset_prefix(project, recorded if isinstance(recorded, str) else fingerprint(root))
    uri = f"s3://{bucket}/{prefix}"
    files = {prefix + path.relative_to(root).as_posix(): path for path in sorted(_files(root))}
    sizes = {key: path.stat().st_size for key, path in files.items()}

    existing = _existing_sizes(aws, bucket, prefix, dry_run=executor.dry_run)
    todo = [key for key in files if existing.get(key) != sizes[key]]
    skipped = len(files) - len(todo)
    todo_bytes = sum(sizes[key] for key in todo)

    if executor.dry_run:
        if todo:
            executor(
                Call(
                    "s3",
                    "PutObject",
                    {
                        "Bucket": bucket,
                        "Key": f"{prefix}<{len(todo)} files>",
                        "Objects": len(todo),
                        "Bytes": todo_bytes,
                        "FirstKey": todo[0],
                        "LastKey": todo[-1],
                    },
                    why=f"would upload {len(todo)} files ({_human(todo_bytes)}) to {uri}, "
                    f"one PutObject each; {skipped} of {len(files)} already there",
                )
            )
        return UploadResult(uri, len(files), 0, skipped, 0, time.perf_counter() - started)

    client = aws.client("s3")
    done = skipped
    if progress is not None:
        progress(done, len(files))
    # Progress is reported from this thread as uploads finish, so the callback need not be thread-safe.
    with cancelling_pool(max_workers, "s3-upload") as pool:
        pending: set[Future[None]] = {
            pool.submit(_upload, client, files[key], bucket, key, _SERIAL) for key in todo
        }
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                future.result()  # the first failure stops the upload (the pool cancels the rest)
                done += 1
                if progress is not None:
                    progress(done, len(files))

    # Count what S3 holds rather than trusting our own bookkeeping: a stray or missing object under a
    # content-addressed prefix means the dataset a training job would read is not the one we hashed.
    stored = len(_existing_sizes(aws, bucket, prefix, dry_run=False))
    if stored != len(files):
        raise AwsError(
            f"upload check failed: {uri} holds {stored} objects but {root} has {len(files)} files; "
            f"run the upload again, and delete the prefix if it holds objects the dataset does not"
        )
    return UploadResult(uri, len(files), len(todo), skipped, todo_bytes, time.perf_counter() - started)


def upload_file(aws: Aws, path: Path, uri: str, executor: Executor) -> str:
    """Put one local file at `uri` (multipart when large); a dry run prints the request instead."""
    bucket, key = parse_s3_uri(uri)
    if not path.is_file():
        raise UsageError(f"cannot upload {path}: no such file")
    if executor.dry_run:
        executor(_put_call(bucket, key, f"<contents of {path}, {path.stat().st_size} bytes>"))
        return uri
    # Direct, not through the executor: the managed transfer (multipart, part retries) has no single
    # API operation a Call could name.
    _upload(aws.client("s3"), path, bucket, key)
    return uri


def download_file(aws: Aws, uri: str, dest: Path) -> Path:
    """Fetch `uri` to `dest` (parents created); the file appears whole or not at all."""
    bucket, key = parse_s3_uri(uri)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # A sibling temporary file, renamed on success: an interrupted download leaves no half file at `dest`.
    with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=f".{dest.name}.", delete=False) as handle:
        partial = Path(handle.name)
    try:
        with _boto3_errors(f"downloading {uri}"):
            aws.client("s3").download_file(bucket, key, str(partial))
        partial.replace(dest)
    finally:
        partial.unlink(missing_ok=True)
    return dest


@dataclass
class DownloadResult:
    uri: str
    root: Path
    files: int  # files under the prefix (in the splits asked for)
    downloaded: int  # fetched this time; the others were already there with the same size
    seconds: float


def download_dataset(
    aws: Aws,
    uri: str,
    dest: Path,
    *,
    splits: tuple[str, ...] = (),
    progress: Progress | None = None,
    max_workers: int = 16,
) -> DownloadResult:
    """Fetch a dataset prefix (what `upload_dataset` made, or any ImageFolder layout under a prefix) into
    `dest`, only `splits` when given (a deploy needs only test/). A file already there with the same size
    is kept, so a second call fetches nothing; each file appears whole or not at all. The same bytes come
    back, so uploading `dest` again finds the same content-addressed prefix and sends nothing."""
    started = time.perf_counter()
    bucket, key = parse_s3_uri(uri)
    prefix = key if key.endswith("/") else key + "/"
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise UsageError(f"unknown split(s) {unknown}; a dataset has {', '.join(SPLITS)}")
    listed = _existing_sizes(aws, bucket, prefix, dry_run=False)
    wanted = {
        k: size
        for k, size in listed.items()
        if not k.endswith("/")
        and (not splits or k[len(prefix) :].split("/", 1)[0] in splits or "/" not in k[len(prefix) :])
    }
    if not any("/" in k[len(prefix) :] for k in wanted):
        what = f" in {', '.join(splits)}" if splits else ""
        raise UsageError(
            f"no dataset files{what} under s3://{bucket}/{prefix}: upload one with `mlops data upload` "
            "(it prints the prefix), or check the URI"
        )
    root = Path(dest).expanduser()
    for rel in wanted:
        # Keys become paths below `root` only: a key with `..` or an absolute part is refused.
        part = Path(rel[len(prefix) :])
        if part.is_absolute() or ".." in part.parts:
            raise UsageError(f"refusing the S3 key {rel!r}: it would leave {root}")
    todo = [k for k, size in wanted.items() if not _same_size(root / k[len(prefix) :], size)]
    done = len(wanted) - len(todo)
    if progress:
        progress(done, len(wanted))
    with cancelling_pool(max_workers, "s3-download") as pool:
        futures = {
            pool.submit(download_file, aws, f"s3://{bucket}/{k}", root / k[len(prefix) :]) for k in todo
        }
        while futures:
            finished, futures = wait(futures, return_when=FIRST_COMPLETED)
            for future in finished:
                future.result()
                done += 1
                if progress:
                    progress(done, len(wanted))
    return DownloadResult(
        f"s3://{bucket}/{prefix}", root, len(wanted), len(todo), time.perf_counter() - started
    )


def _same_size(path: Path, size: int) -> bool:
    return path.is_file() and path.stat().st_size == size


def download_model(aws: Aws, model_tar_uri: str, dest: Path) -> Path:
    """Fetch a model.tar.gz, extract it safely into `dest` and verify it against its manifest.

    `dest` may be absent, empty, or an earlier model (it holds a manifest.json), which is replaced only
    once the new one has verified; anything else is refused rather than deleted.
    """
    if dest.exists() and not _replaceable(dest):
        raise UsageError(
            f"cannot download a model into {dest}: it exists and is neither empty nor a model directory"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as tmp:
        archive = Path(tmp) / "model.tar.gz"
        try:
            download_file(aws, model_tar_uri, archive)
        except NotFound as exc:
            raise NotFound(
                f"no model artifact at {model_tar_uri}: "
                "check the training job's ModelArtifacts.S3ModelArtifacts",
                code=exc.code,
                operation=exc.operation,
            ) from exc
        staging = Path(tmp) / "model"
        staging.mkdir()
        try:
            with tarfile.open(archive, "r:gz") as tar:
                # "data" refuses absolute names, `..`, links that leave the directory and device files.
                tar.extractall(staging, filter="data")
        except tarfile.FilterError as exc:
            raise MlopsError(f"refusing the model artifact at {model_tar_uri}: {exc}") from exc
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise MlopsError(
                f"the model artifact at {model_tar_uri} is not a readable tar.gz: {exc}"
            ) from exc
        try:
            verify(staging)
        except ArtifactError as exc:
            raise MlopsError(f"the model artifact at {model_tar_uri} failed verification: {exc}") from exc
        # Only a verified model reaches `dest`, and the old one moves aside first (into the temporary
        # directory, removed with it), so `dest` is never a mix of two models or half of one.
        if dest.exists():
            dest.rename(Path(tmp) / "previous")
        staging.rename(dest)
    return dest


def _replaceable(dest: Path) -> bool:
    if not dest.is_dir() or dest.is_symlink():
        return False
    return not any(dest.iterdir()) or (dest / MANIFEST_NAME).is_file()


def upload_model(aws: Aws, model_dir: Path, uri: str, executor: Executor) -> str:
    """Tar a verified model directory as SageMaker does (files at the tar root) and put it at `uri`."""
    parse_s3_uri(uri)
    if not model_dir.is_dir():
        raise UsageError(f"cannot upload the model: {model_dir} is not a directory")
    try:
        verify(model_dir)  # never publish an artifact that serving would refuse
    except ArtifactError as exc:
        raise UsageError(f"cannot upload the model: {exc}") from exc
    with tempfile.TemporaryDirectory(prefix="model-tar-") as tmp:
        archive = Path(tmp) / "model.tar.gz"
        _tar_model(model_dir, archive)
        if executor.dry_run:
            bucket, key = parse_s3_uri(uri)
            size = archive.stat().st_size
            executor(_put_call(bucket, key, f"<model.tar.gz of {model_dir}, {size} bytes>"))
            return uri
        return upload_file(aws, archive, uri, executor)


def _tar_model(model_dir: Path, archive: Path) -> None:
    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        # No owner, no timestamps: the same model directory always gives the same archive bytes.
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        return info

    with (
        archive.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in sorted(_files(model_dir)):
            tar.add(path, arcname=path.relative_to(model_dir).as_posix(), recursive=False, filter=normalise)


def _dataset_root(local_dir: Path) -> Path:
    root = Path(local_dir).expanduser()
    if not root.is_dir():
        raise UsageError(
            f"no dataset at {root}: create one with `mlops data synthetic` or point at an existing directory"
        )
    if (root / "data.yaml").is_file() and (root / "images").is_dir():
        # A YOLO dataset (`mlops data yolo --out`, `mlops data synthetic --task detection`): its splits
        # live under images/ and labels/, and data.yaml's relative paths survive the round trip.
        if not any(_files(root / "images")):
            raise UsageError(f"{root}/images holds no files: the dataset is empty")
        return root
    if not (root / "train").is_dir():
        raise UsageError(
            f"{root} is not an ImageFolder dataset: it has no train/ directory "
            f"(expected train/ validation/ test/, each with one directory per class)"
        )
    if not any(_files(root / "train")):
        raise UsageError(f"{root}/train holds no files: the dataset is empty")
    return root


def _files(root: Path) -> Iterator[Path]:
    return (path for path in root.rglob("*") if path.is_file())


def _existing_sizes(aws: Aws, bucket: str, prefix: str, *, dry_run: bool) -> dict[str, int]:
    """key -> size of every object under `prefix` (ListObjectsV2 pages of up to 1000)."""
    try:
        with aws_errors(f"listing s3://{bucket}/{prefix}"):
            pages = aws.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            return {item["Key"]: int(item["Size"]) for page in pages for item in page.get("Contents", [])}
    except UsageError:
        # No credentials or region: a dry run still plans, as if the prefix were empty.
        if dry_run:
            return {}
        raise


def _put_call(bucket: str, key: str, body: str) -> Call:
    return Call(
        "s3", "PutObject", {"Bucket": bucket, "Key": key, "Body": body}, why=f"upload s3://{bucket}/{key}"
    )


def _upload(client: Any, path: Path, bucket: str, key: str, config: TransferConfig | None = None) -> None:
    with _boto3_errors(f"uploading {path} to s3://{bucket}/{key}"):
        client.upload_file(str(path), bucket, key, Config=config)


@contextmanager
def _boto3_errors(what: str) -> Iterator[None]:
    """`aws_errors`, plus boto3's transfer-layer exceptions, which wrap the ClientError they hide."""
    try:
        with aws_errors(what):
            yield
    except S3UploadFailedError as exc:
        # boto3 raises it inside `except ClientError`, so the real error (and its code) is the context.
        cause = exc.__context__
        if isinstance(cause, ClientError):
            raise translate(cause, what) from exc
        raise AwsError(f"{what}: {exc}") from exc
    except Boto3Error as exc:  # RetriesExceededError and friends
        raise AwsError(f"{what}: {exc}") from exc


def _human(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1_000_000 else f"{size / 1e3:.1f} kB"


__all__ = [
    "DownloadResult",
    "UploadResult",
    "channel_uris",
    "dataset_prefix",
    "download_dataset",
    "download_file",
    "download_model",
    "parse_s3_uri",
    "upload_dataset",
    "upload_file",
    "upload_model",
]
