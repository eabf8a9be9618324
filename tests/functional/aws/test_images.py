"""ECR on moto and a fake Docker engine: repositories, digests, publish, dry runs and refusals."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import docker.errors
import pytest
import requests.exceptions

from infra.aws.errors import AwsError
from infra.aws.images import (
    IMAGES,
    PLATFORM,
    ImageRef,
    create_repository_call,
    ensure_repositories,
    image_digest,
    latest_tag,
    newest_tagged,
    publish,
    repository_name,
)
from infra.aws.plan import DryRunExecutor, LiveExecutor
from infra.aws.session import Aws, tags
from infra.errors import MlopsError, UsageError
from tests.functional.aws.conftest import REGION, settings

SHA = "0123456789ab"
ACCOUNT = "123456789012"  # moto's account
REGISTRY = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
TAGS = tags(settings(), git_sha=SHA, expiry_days=30, now=0)


def manifest(seed: str) -> str:
    """A Docker image manifest v2 as `docker push` uploads it (moto only stores and hashes it)."""
    config = "sha256:" + hashlib.sha256(seed.encode()).hexdigest()
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": 1,
                "digest": config,
            },
            "layers": [],
        }
    )


class FakeImages:
    def __init__(self, engine: FakeDocker) -> None:
        self.engine = engine

    def build(self, **kwargs: Any) -> tuple[object, Iterator[dict[str, str]]]:
        self.engine.calls.append(("build", kwargs))
        return object(), iter([{"stream": "Successfully built"}])

    def pull(self, repository: str, tag: str, **kwargs: Any) -> object:
        self.engine.calls.append(("pull", {"repository": repository, "tag": tag, **kwargs}))
        if self.engine.pull_error:
            raise docker.errors.APIError(self.engine.pull_error)
        return object()

    def push(self, repository: str, tag: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.engine.calls.append(("push", {"repository": repository, "tag": tag, **kwargs}))
        if self.engine.push_error:
            return iter([{"status": "Preparing"}, {"errorDetail": {"message": self.engine.push_error}}])
        # What a real push does as far as ECR can tell: the manifest lands under the tag.
        registry, name = repository.split("/", 1)
        assert registry == REGISTRY
        self.engine.ecr.put_image(repositoryName=name, imageManifest=manifest(name), imageTag=tag)
        return iter([{"status": "Pushed"}, {"status": f"{tag}: digest: sha256:... size: 1"}])


class FakeDocker:
    """Stands in for `docker.DockerClient`: records build/login/pull/push, and push writes to moto's ECR."""

    def __init__(self, aws: Aws, push_error: str | None = None, pull_error: str | None = None) -> None:
        self.ecr = aws.client("ecr")
        self.push_error = push_error
        self.pull_error = pull_error
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.images = FakeImages(self)

    def ping(self) -> bool:
        return True

    def login(self, username: str, password: str, registry: str) -> dict[str, str]:
        self.calls.append(("login", {"username": username, "password": password, "registry": registry}))
        return {"Status": "Login Succeeded"}

    def named(self, name: str) -> list[dict[str, Any]]:
        return [kwargs for call, kwargs in self.calls if call == name]


def no_docker() -> Any:
    pytest.fail("Docker was used where it must not be")


def run_publish(
    aws: Aws,
    tmp_path: Path,
    factory: Any,
    *,
    git_sha: str = SHA,
    executor: Any = None,
    events: list[str] | None = None,
) -> dict[str, ImageRef]:
    for dockerfile in IMAGES.values():
        (tmp_path / dockerfile).write_text("FROM scratch\n")
    return publish(
        aws,
        "demo",
        git_sha=git_sha,
        context=tmp_path,
        executor=executor or LiveExecutor(aws.client),
        tags=TAGS,
        docker_factory=factory,
        on_event=(events if events is not None else []).append,
    )


# --- repositories --------------------------------------------------------------------------------


def test_repository_names_are_project_and_image():
    assert repository_name("demo", "train") == "demo-train"
    with pytest.raises(UsageError, match="not a valid ECR repository name"):
        repository_name("Demo Project", "train")


def test_repositories_are_created_scanned_immutable_and_tagged(aws: Aws):
    uris = ensure_repositories(aws, "demo", LiveExecutor(aws.client), TAGS)
    assert uris == {"train": f"{REGISTRY}/demo-train", "serve": f"{REGISTRY}/demo-serve"}
    ecr = aws.client("ecr")
    for repo in ecr.describe_repositories(repositoryNames=["demo-train", "demo-serve"])["repositories"]:
        assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
        assert repo["imageTagMutability"] == "IMMUTABLE"
        assert ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"])["tags"] == TAGS


def test_ensuring_repositories_twice_creates_nothing_the_second_time(aws: Aws):
    first = ensure_repositories(aws, "demo", LiveExecutor(aws.client), TAGS)
    executor = LiveExecutor(aws.client)
    assert ensure_repositories(aws, "demo", executor, TAGS) == first
    assert executor.executed == []


def test_a_repository_created_by_another_run_meanwhile_is_used(aws: Aws):
    class RacingExecutor(LiveExecutor):
        """Another pipeline wins the race: the repository appears just before our create."""

        def __call__(self, call: Any) -> dict[str, Any]:
            aws.client("ecr").create_repository(repositoryName=call.params["repositoryName"])
            return super().__call__(call)

    uris = ensure_repositories(aws, "demo", RacingExecutor(aws.client), TAGS)
    assert uris["train"] == f"{REGISTRY}/demo-train"


def test_the_create_request_is_exactly_what_the_plan_says():
    call = create_repository_call("demo-train", TAGS)
    assert (call.service, call.operation, call.mutating) == ("ecr", "CreateRepository", True)
    assert call.params == {
        "repositoryName": "demo-train",
        "imageScanningConfiguration": {"scanOnPush": True},
        "imageTagMutability": "IMMUTABLE",
        "tags": TAGS,
    }


# --- digests -------------------------------------------------------------------------------------


def test_a_missing_tag_has_no_digest_and_a_pushed_one_has_the_registrys(aws: Aws):
    ensure_repositories(aws, "demo", LiveExecutor(aws.client), TAGS)
    assert image_digest(aws, "demo-train", SHA) is None
    pushed = aws.client("ecr").put_image(
        repositoryName="demo-train", imageManifest=manifest("x"), imageTag=SHA
    )
    digest = image_digest(aws, "demo-train", SHA)
    assert digest is not None and digest.startswith("sha256:")
    assert digest == pushed["image"]["imageId"]["imageDigest"]


def test_an_image_without_a_digest_cannot_be_pinned():
    with pytest.raises(MlopsError, match="no digest"):
        _ = ImageRef("train", f"{REGISTRY}/demo-train", SHA, None, pushed=False).by_digest


# --- publish -------------------------------------------------------------------------------------


def test_publish_builds_pushes_and_returns_the_registry_digest(aws: Aws, tmp_path: Path):
    engine = FakeDocker(aws)
    events: list[str] = []
    refs = run_publish(aws, tmp_path, lambda: engine, events=events)

    assert set(refs) == {"train", "serve"}
    for image, ref in refs.items():
        assert ref.pushed and ref.tag == SHA
        assert ref.by_digest == f"{REGISTRY}/demo-{image}@{image_digest(aws, f'demo-{image}', SHA)}"
        assert "@sha256:" in ref.by_digest
    builds = engine.named("build")
    assert [b["dockerfile"] for b in builds] == ["Dockerfile.train", "Dockerfile.serve"]
    assert builds[0] == {
        "path": str(tmp_path),
        "dockerfile": "Dockerfile.train",
        "tag": f"{REGISTRY}/demo-train:{SHA}",
        "buildargs": {"CODE_VERSION": SHA},
        "platform": PLATFORM,
        "rm": True,
    }
    (login,) = engine.named("login")  # one registry, one login
    token = base64.b64decode(
        aws.client("ecr").get_authorization_token()["authorizationData"][0]["authorizationToken"]
    )
    assert (login["username"], login["password"]) == ("AWS", token.decode().split(":", 1)[1])
    assert login["registry"] == f"https://{REGISTRY}"
    pushes = engine.named("push")
    assert [(p["repository"], p["tag"], p["stream"], p["decode"]) for p in pushes] == [
        (f"{REGISTRY}/demo-train", SHA, True, True),
        (f"{REGISTRY}/demo-serve", SHA, True, True),
    ]
    assert pushes[0]["auth_config"] == {"username": "AWS", "password": login["password"]}
    assert any(e.startswith("train: pushed") for e in events)


# --- layer cache ---------------------------------------------------------------------------------


def test_the_newest_tagged_image_is_the_cache_and_untagged_ones_do_not_count():
    details = [
        {"imageTags": ["old"], "imagePushedAt": 100},
        {"imageTags": ["new", "also-new"], "imagePushedAt": 300},
        {"imageDigest": "sha256:untagged", "imagePushedAt": 400},
        {"imageTags": ["middle"], "imagePushedAt": 200},
    ]
    assert newest_tagged(details) == "new"
    assert newest_tagged([{"imageDigest": "sha256:untagged", "imagePushedAt": 1}]) is None
    assert newest_tagged([]) is None


def test_the_newest_image_in_the_repository_is_pulled_and_passed_as_cache_from(aws: Aws, tmp_path: Path):
    ensure_repositories(aws, "demo", LiveExecutor(aws.client), TAGS)
    ecr = aws.client("ecr")
    ecr.put_image(repositoryName="demo-train", imageManifest=manifest("older"), imageTag="older")
    time.sleep(1.0)  # ECR's imagePushedAt (as moto keeps it) has whole seconds
    ecr.put_image(repositoryName="demo-train", imageManifest=manifest("newer"), imageTag="newer")
    assert latest_tag(aws, "demo-train") == "newer"
    engine = FakeDocker(aws)
    events: list[str] = []
    run_publish(aws, tmp_path, lambda: engine, events=events)

    (pull,) = engine.named("pull")  # demo-serve is empty: nothing to pull for it
    assert (pull["repository"], pull["tag"], pull["platform"]) == (
        f"{REGISTRY}/demo-train",
        "newer",
        PLATFORM,
    )
    (login,) = engine.named("login")  # logged in before the pull, once for pull and pushes alike
    assert pull["auth_config"] == {"username": "AWS", "password": login["password"]}
    assert [call for call, _ in engine.calls][:2] == ["login", "pull"]
    train, serve = engine.named("build")
    assert train["cache_from"] == [f"{REGISTRY}/demo-train:newer"]
    assert "cache_from" not in serve
    assert f"pulling {REGISTRY}/demo-train:newer as the layer cache" in events
    assert f"no earlier image in {REGISTRY}/demo-serve: building without a layer cache" in events


def test_a_failed_cache_pull_is_only_a_note(aws: Aws, tmp_path: Path):
    ensure_repositories(aws, "demo", LiveExecutor(aws.client), TAGS)
    aws.client("ecr").put_image(repositoryName="demo-train", imageManifest=manifest("o"), imageTag="older")
    engine = FakeDocker(aws, pull_error="manifest unknown")
    events: list[str] = []
    refs = run_publish(aws, tmp_path, lambda: engine, events=events)

    assert refs["train"].pushed and refs["train"].digest
    assert "cache_from" not in engine.named("build")[0]
    (note,) = [e for e in events if e.startswith("note:")]
    assert f"could not pull {REGISTRY}/demo-train:older for the layer cache" in note
    assert "manifest unknown" in note and note.endswith("building without it")


def test_publish_skips_the_build_when_the_tag_is_already_in_ecr(aws: Aws, tmp_path: Path):
    ensure_repositories(aws, "demo", LiveExecutor(aws.client), TAGS)
    for image in IMAGES:
        aws.client("ecr").put_image(
            repositoryName=f"demo-{image}", imageManifest=manifest(image), imageTag=SHA
        )
    events: list[str] = []
    refs = run_publish(aws, tmp_path, no_docker, events=events)  # no engine needed at all
    assert all(not ref.pushed and ref.digest for ref in refs.values())
    assert refs["train"].digest == image_digest(aws, "demo-train", SHA)
    assert sum("already in ECR" in e for e in events) == 2


def test_publish_builds_only_the_images_that_are_missing(aws: Aws, tmp_path: Path):
    ensure_repositories(aws, "demo", LiveExecutor(aws.client), TAGS)
    aws.client("ecr").put_image(repositoryName="demo-train", imageManifest=manifest("t"), imageTag=SHA)
    engine = FakeDocker(aws)
    refs = run_publish(aws, tmp_path, lambda: engine)
    assert [b["dockerfile"] for b in engine.named("build")] == ["Dockerfile.serve"]
    assert (refs["train"].pushed, refs["serve"].pushed) == (False, True)


def test_without_a_docker_engine_publish_says_where_images_are_built(aws: Aws, tmp_path: Path):
    def unreachable() -> Any:
        raise docker.errors.DockerException("Error while fetching server API version: no such file")

    with pytest.raises(UsageError, match=r"no Docker engine is reachable.*GitHub Actions"):
        run_publish(aws, tmp_path, unreachable)


def test_an_engine_that_refuses_connections_is_the_same_clear_error(aws: Aws, tmp_path: Path):
    class Unreachable(FakeDocker):
        def ping(self) -> bool:
            raise requests.exceptions.ConnectionError("Connection aborted: /var/run/docker.sock")

    with pytest.raises(UsageError, match="no Docker engine is reachable"):
        run_publish(aws, tmp_path, lambda: Unreachable(aws))


def test_a_push_error_in_the_stream_fails_the_publish(aws: Aws, tmp_path: Path):
    engine = FakeDocker(aws, push_error="denied: not authorized to perform ecr:InitiateLayerUpload")
    with pytest.raises(AwsError, match=r"pushing .*demo-train:0123456789ab failed: denied"):
        run_publish(aws, tmp_path, lambda: engine)


def test_a_failed_build_reports_its_last_output(aws: Aws, tmp_path: Path):
    class Broken(FakeImages):
        def build(self, **kwargs: Any) -> tuple[object, Iterator[dict[str, str]]]:
            raise docker.errors.BuildError("The command 'pip install' returned 1", [{"stream": "no wheel\n"}])

    engine = FakeDocker(aws)
    engine.images = Broken(engine)
    with pytest.raises(
        MlopsError, match=r"building Dockerfile.train failed: .*returned 1 \(last output: no wheel\)"
    ):
        run_publish(aws, tmp_path, lambda: engine)


@pytest.mark.parametrize("sha", ["unknown", "0123456789ab-dirty", ""])
def test_an_uncommitted_tree_is_never_pushed(aws: Aws, tmp_path: Path, sha: str):
    with pytest.raises(UsageError, match="commit"):
        run_publish(aws, tmp_path, no_docker, git_sha=sha)
    assert aws.client("ecr").describe_repositories()["repositories"] == []


def test_a_missing_dockerfile_is_a_usage_error(aws: Aws, tmp_path: Path):
    with pytest.raises(UsageError, match=r"no Dockerfile.train, Dockerfile.serve in .*repository root"):
        publish(
            aws,
            "demo",
            git_sha=SHA,
            context=tmp_path,
            executor=LiveExecutor(aws.client),
            tags=TAGS,
            docker_factory=no_docker,
            on_event=lambda _: None,
        )


# --- dry runs ------------------------------------------------------------------------------------


def test_a_dry_run_prints_the_repositories_and_builds_and_calls_no_docker(aws: Aws, tmp_path: Path):
    requests_: list[str] = []
    events: list[str] = []
    executor = DryRunExecutor(emit=requests_.append, clients=aws.client)
    refs = run_publish(aws, tmp_path, no_docker, executor=executor, events=events)

    assert len(requests_) == 2 and all(r.startswith("ecr.CreateRepository") for r in requests_)
    assert '"imageTagMutability": "IMMUTABLE"' in requests_[0] and '"scanOnPush": true' in requests_[0]
    assert events == [
        f"would build Dockerfile.train as {REGISTRY}/demo-train:{SHA} and push it",
        f"would build Dockerfile.serve as {REGISTRY}/demo-serve:{SHA} and push it",
    ]
    assert all(ref.digest is None and not ref.pushed for ref in refs.values())
    assert aws.client("ecr").describe_repositories()["repositories"] == []


def test_a_dry_run_of_a_dirty_tree_still_plans_and_says_it_would_stop(aws: Aws, tmp_path: Path):
    events: list[str] = []
    run_publish(
        aws,
        tmp_path,
        no_docker,
        git_sha="abc-dirty",
        executor=DryRunExecutor(emit=lambda _: None),
        events=events,
    )
    assert "commit" in events[0] and "would build Dockerfile.train" in events[1]


def test_a_dry_run_without_credentials_still_plans(aws: Aws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    anonymous = Aws(settings(), session=boto3.Session(region_name=REGION))
    requests_: list[str] = []
    events: list[str] = []
    run_publish(anonymous, tmp_path, no_docker, executor=DryRunExecutor(emit=requests_.append), events=events)
    assert len(requests_) == 2
    planned = f"<account>.dkr.ecr.{REGION}.amazonaws.com/demo-train:{SHA}"
    assert events[0] == f"would build Dockerfile.train as {planned} and push it"
    with pytest.raises(UsageError, match="no AWS credentials"):
        run_publish(anonymous, tmp_path, no_docker)
