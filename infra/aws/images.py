"""ECR + the docker SDK: build the train and serve images, tag them with the git SHA, push, read the digest.

`publish` runs in stages:

1. check       the git SHA can be an immutable tag (no "unknown", no "-dirty"); the Dockerfiles exist.
2. repositories `ensure_repositories`: DescribeRepositories, and CreateRepository (scan on push,
               IMMUTABLE tags, the pipeline's tags) through the executor for any that are missing.
3. skip        an image whose tag is already in ECR is not rebuilt: the same SHA is the same code, and an
               IMMUTABLE repository would refuse the push anyway. Its registry digest is returned.
4. cache       DescribeImages: the repository's most recently pushed tagged image is pulled (after the
               ECR login) and handed to the build as `cache_from`, because CI runners start with an
               empty Docker cache. Best effort: an empty repository or a failed pull is a note.
5. build       docker SDK `images.build` with CODE_VERSION=<sha> (only now is a Docker engine needed).
6. push        GetAuthorizationToken -> `login` -> `images.push`; errors in the push stream are raised.
7. digest      DescribeImages: the registry's digest is the truth, and deploys pin it (`by_digest`).

A dry run plans stage 2 as CreateRepository requests through the executor, says what stages 3-7 would
do through `on_event`, and never touches Docker.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from infra.aws.errors import AwsError, NotFound, aws_errors
from infra.aws.plan import Call, Executor
from infra.aws.session import Aws
from infra.errors import MlopsError, UsageError

IMAGES = {"train": "Dockerfile.train", "serve": "Dockerfile.serve"}

# SageMaker's training and default hosting instances are x86_64; an image built on an arm64 laptop
# without this would start there with "exec format error".
PLATFORM = "linux/amd64"

# ECR's repository name grammar (lowercase path components joined by . _ - and /).
_REPOSITORY = re.compile(r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$")
# Docker's tag grammar, which ECR also accepts.
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")

_NO_ENGINE = (
    "no Docker engine is reachable ({detail}): start Docker, or publish images from GitHub Actions "
    "(the pipeline workflow builds them on its runners)"
)

DockerFactory = Callable[[], Any]
EventSink = Callable[[str], None]


def repository_name(project: str, image: str) -> str:
    name = f"{project}-{image}"
    if not (2 <= len(name) <= 256 and _REPOSITORY.match(name)):
        raise UsageError(
            f"{name!r} is not a valid ECR repository name: the project name must be lowercase letters, "
            f"digits and . _ - (set [project] name in mlops.toml or MLOPS_PROJECT)"
        )
    return name


def create_repository_call(name: str, tags: list[dict[str, str]]) -> Call:
    return Call(
        "ecr",
        "CreateRepository",
        {
            "repositoryName": name,
            # Every push is scanned for CVEs; findings show in the console and DescribeImageScanFindings.
            "imageScanningConfiguration": {"scanOnPush": True},
            # A tag is a git SHA and must always mean the same bytes: ECR refuses to move an existing tag.
            "imageTagMutability": "IMMUTABLE",
            "tags": tags,
        },
        why=f"create the ECR repository {name}",
    )


def ensure_repositories(
    aws: Aws, project: str, executor: Executor, tags: list[dict[str, str]]
) -> dict[str, str]:
    """image -> repositoryUri, creating missing repositories through `executor`.

    In a dry run the URIs are the ones the repositories would have; without credentials the account
    shows as `<account>` and every repository is planned as missing.
    """
    uris: dict[str, str] = {}
    for image in IMAGES:
        name = repository_name(project, image)
        uri = _describe_repository(aws, name, dry_run=executor.dry_run)
        if uri is None:
            uri = _create_repository(aws, name, executor, tags)
        if uri is None:  # planned, not created: the URI it will have
            uri = repository_uri(aws, name, dry_run=executor.dry_run)
        uris[image] = uri
    return uris


def _create_repository(aws: Aws, name: str, executor: Executor, tags: list[dict[str, str]]) -> str | None:
    try:
        response = executor(create_repository_call(name, tags))
    except AwsError as exc:
        # Another run created it between our Describe and Create: use theirs.
        if exc.code != "RepositoryAlreadyExistsException":
            raise
        return _describe_repository(aws, name, dry_run=False)
    uri = response.get("repository", {}).get("repositoryUri")
    return str(uri) if uri else None


def image_digest(aws: Aws, repository: str, tag: str) -> str | None:
    """The digest ECR holds for `repository:tag`, or None when the tag is not there."""
    try:
        with aws_errors(f"looking up {repository}:{tag} in ECR"):
            response = aws.client("ecr").describe_images(
                repositoryName=repository, imageIds=[{"imageTag": tag}]
            )
    except NotFound as exc:
        if exc.code == "ImageNotFoundException":
            return None
        raise
    details = response.get("imageDetails") or []
    return str(details[0]["imageDigest"]) if details else None


def newest_tagged(details: list[dict[str, Any]]) -> str | None:
    """The first tag of the most recently pushed image that has one, from DescribeImages' imageDetails."""
    tagged = [d for d in details if d.get("imageTags") and d.get("imagePushedAt") is not None]
    if not tagged:
        return None
    return str(max(tagged, key=lambda d: d["imagePushedAt"])["imageTags"][0])


def latest_tag(aws: Aws, repository: str) -> str | None:
    """The tag of the image pushed last to `repository` (None when it holds no tagged image)."""
    details: list[dict[str, Any]] = []
    with aws_errors(f"listing the images in {repository}"):
        pages = aws.client("ecr").get_paginator("describe_images")
        for page in pages.paginate(repositoryName=repository, filter={"tagStatus": "TAGGED"}):
            details.extend(page.get("imageDetails") or [])
    return newest_tagged(details)


@dataclass(frozen=True)
class ImageRef:
    image: str  # "train" | "serve"
    repository_uri: str
    tag: str  # the git SHA
    digest: str | None  # None only in a dry run for an image not yet pushed
    pushed: bool  # False when the tag was already in ECR (or in a dry run)

    @property
    def by_tag(self) -> str:
        return f"{self.repository_uri}:{self.tag}"

    @property
    def by_digest(self) -> str:
        """What training jobs and endpoints pin: a digest cannot be re-pointed the way a tag can."""
        if not self.digest:
            raise MlopsError(f"{self.by_tag} has no digest (not pushed: a dry run?); nothing to pin")
        return f"{self.repository_uri}@{self.digest}"


def publish(
    aws: Aws,
    project: str,
    *,
    git_sha: str,
    context: Path,
    executor: Executor,
    tags: list[dict[str, str]],
    docker_factory: DockerFactory | None = None,
    on_event: EventSink = print,
) -> dict[str, ImageRef]:
    """Build and push every image in IMAGES tagged with `git_sha`; see the module docstring."""
    dry_run = executor.dry_run
    problem = _tag_problem(git_sha)
    if problem and not dry_run:
        raise UsageError(problem)
    if problem:
        on_event(f"note: a real publish would stop here: {problem}")
    _check_context(context)

    uris = ensure_repositories(aws, project, executor, tags)
    engine = _Engine(docker_factory or docker.from_env, on_event)
    refs: dict[str, ImageRef] = {}
    for image, dockerfile in IMAGES.items():
        uri, name = uris[image], repository_name(project, image)
        # A refused SHA (dry run only) is no tag to look up.
        existing = None if problem else _existing_digest(aws, name, git_sha, dry_run=dry_run)
        if existing:
            on_event(f"{image}: {uri}:{git_sha} is already in ECR ({existing}); not rebuilding it")
            refs[image] = ImageRef(image, uri, git_sha, existing, pushed=False)
            continue
        if dry_run:
            on_event(f"would build {dockerfile} as {uri}:{git_sha} and push it")
            refs[image] = ImageRef(image, uri, git_sha, None, pushed=False)
            continue
        cache = engine.pull_cache(aws, uri, _cache_tag(aws, name, on_event))
        engine.build(context, dockerfile, f"{uri}:{git_sha}", git_sha, cache_from=cache)
        engine.push(aws, uri, git_sha)
        digest = image_digest(aws, name, git_sha)
        if digest is None:
            raise AwsError(f"pushed {uri}:{git_sha} but ECR does not list it; check the repository {name}")
        on_event(f"{image}: pushed {uri}@{digest}")
        refs[image] = ImageRef(image, uri, git_sha, digest, pushed=True)
    return refs


class _Engine:
    """The docker client, created on first need (a publish whose tags all exist needs no engine)."""

    def __init__(self, factory: DockerFactory, on_event: EventSink) -> None:
        self._factory = factory
        self._client: Any = None
        self._logged_in: dict[str, dict[str, str]] = {}  # registry -> credentials
        self._on_event = on_event

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                client = self._factory()
            except docker.errors.DockerException as exc:
                raise UsageError(_NO_ENGINE.format(detail=_short(exc))) from exc
            with _docker_errors("contacting the Docker engine", MlopsError):
                # A client built with an explicit API version connects lazily; ask now, not mid-build.
                client.ping()
            self._client = client
        return self._client

    def pull_cache(self, aws: Aws, uri: str, tag: str | None) -> list[str]:
        """Pull `uri:tag` to seed the layer cache: [that image], or [] (with a note) when there is none
        or it cannot be pulled. A build without a cache is slower, never wrong."""
        if tag is None:
            self._on_event(f"no earlier image in {uri}: building without a layer cache")
            return []
        reference = f"{uri}:{tag}"
        client = self.client  # no engine at all is the build's error to report, not a note
        try:
            credentials = self._login(aws, uri.split("/", 1)[0])
            self._on_event(f"pulling {reference} as the layer cache")
            with _docker_errors(f"pulling {reference}", MlopsError):
                client.images.pull(uri, tag=tag, platform=PLATFORM, auth_config=credentials)
        except MlopsError as exc:
            self._on_event(
                f"note: could not pull {reference} for the layer cache ({exc}); building without it"
            )
            return []
        return [reference]

    def build(
        self, context: Path, dockerfile: str, tag: str, git_sha: str, *, cache_from: list[str] | None = None
    ) -> None:
        self._on_event(
            f"building {dockerfile} as {tag}" + (f" (cache from {cache_from[0]})" if cache_from else "")
        )
        client = self.client
        # Layers of `cache_from` are reused where their instructions and inputs match this build's.
        extra: dict[str, Any] = {"cache_from": cache_from} if cache_from else {}
        with _docker_errors(f"building {dockerfile}", MlopsError):
            client.images.build(
                path=str(context),
                dockerfile=dockerfile,
                tag=tag,
                buildargs={"CODE_VERSION": git_sha},
                platform=PLATFORM,
                rm=True,
                **extra,
            )

    def push(self, aws: Aws, uri: str, tag: str) -> None:
        registry = uri.split("/", 1)[0]
        credentials = self._login(aws, registry)
        self._on_event(f"pushing {uri}:{tag}")
        with _docker_errors(f"pushing {uri}:{tag}", AwsError):
            # auth_config as well as login: a credential helper (Docker Desktop's "desktop" store)
            # would otherwise win over the fresh token with a stale one.
            events = self.client.images.push(uri, tag=tag, stream=True, decode=True, auth_config=credentials)
            for event in events:
                error = event.get("error") or (event.get("errorDetail") or {}).get("message")
                if error:
                    raise AwsError(f"pushing {uri}:{tag} failed: {str(error).strip()}")

    def _login(self, aws: Aws, registry: str) -> dict[str, str]:
        if registry not in self._logged_in:
            with aws_errors("getting an ECR login token"):
                data = aws.client("ecr").get_authorization_token()["authorizationData"][0]
            # The token is base64("AWS:<password>"), valid for 12 hours.
            username, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
            endpoint = str(data.get("proxyEndpoint") or f"https://{registry}")
            with _docker_errors(f"logging in to {registry}", AwsError):
                self.client.login(username=username, password=password, registry=endpoint)
            self._logged_in[registry] = {"username": username, "password": password}
        return self._logged_in[registry]


@contextmanager
def _docker_errors(what: str, api_error: type[MlopsError]) -> Iterator[None]:
    """Docker SDK failures as the project's exceptions; `api_error` for the engine's HTTP errors."""
    try:
        yield
    except requests.exceptions.ConnectionError as exc:
        raise UsageError(_NO_ENGINE.format(detail=_short(exc))) from exc
    except docker.errors.BuildError as exc:
        tail = [str(e.get("stream", "")).strip() for e in exc.build_log if isinstance(e, dict)]
        last = next((line for line in reversed(tail) if line), "")
        raise MlopsError(f"{what} failed: {exc.msg}" + (f" (last output: {last})" if last else "")) from exc
    except docker.errors.APIError as exc:
        # While pushing, the registry's 401/403 (an expired token, a missing ecr:PutImage grant) land here.
        raise api_error(f"{what} failed: {exc.explanation or exc}") from exc
    except docker.errors.DockerException as exc:
        raise MlopsError(f"{what} failed: {exc}") from exc


def _tag_problem(git_sha: str) -> str | None:
    if not git_sha or git_sha == "unknown" or git_sha.endswith("-dirty"):
        return (
            f"the code version is {git_sha or 'empty'!r}, not a clean git commit; images are tagged "
            f"immutably with the commit SHA, so commit (or stash) your changes first, then publish"
        )
    if not _TAG.match(git_sha):
        return f"{git_sha!r} cannot be an image tag (letters, digits, _ . - and at most 128 characters)"
    return None


def _check_context(context: Path) -> None:
    missing = [name for name in IMAGES.values() if not (context / name).is_file()]
    if missing:
        raise UsageError(
            f"no {', '.join(missing)} in {context}: publish from the repository root (the build context)"
        )


def _describe_repository(aws: Aws, name: str, *, dry_run: bool) -> str | None:
    try:
        with aws_errors(f"looking up the ECR repository {name}"):
            response = aws.client("ecr").describe_repositories(repositoryNames=[name])
    except NotFound:
        return None
    except UsageError:
        # No credentials or region: a dry run still plans, treating the repository as missing.
        if dry_run:
            return None
        raise
    return str(response["repositories"][0]["repositoryUri"])


def _cache_tag(aws: Aws, name: str, on_event: EventSink) -> str | None:
    try:
        return latest_tag(aws, name)
    except AwsError as exc:  # the cache only saves time: never fail a publish over it
        on_event(f"note: could not list {name} for a layer cache ({exc}); building without one")
        return None


def _existing_digest(aws: Aws, name: str, tag: str, *, dry_run: bool) -> str | None:
    try:
        return image_digest(aws, name, tag)
    except (NotFound, UsageError):
        # In a dry run the repository may not exist yet, or there may be no credentials: nothing is there.
        if dry_run:
            return None
        raise


def repository_uri(aws: Aws, name: str, *, dry_run: bool = False) -> str:
    """The URI a repository has (or would have): `<account>.dkr.ecr.<region>.amazonaws.com/<name>`."""
    return f"{_account(aws, dry_run=dry_run)}.dkr.ecr.{aws.region}.amazonaws.com/{name}"


def _account(aws: Aws, *, dry_run: bool) -> str:
    try:
        return aws.account()
    except UsageError:
        if dry_run:
            return "<account>"
        raise


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


__all__ = [
    "IMAGES",
    "PLATFORM",
    "ImageRef",
    "create_repository_call",
    "ensure_repositories",
    "image_digest",
    "latest_tag",
    "newest_tagged",
    "publish",
    "repository_name",
]
