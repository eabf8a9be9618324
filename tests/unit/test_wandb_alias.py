"""W&B's `production` alias follows what the endpoint serves: moved on a promotion and on a rollback,
left alone when a deploy or its verification fails, and never a reason for a deploy to fail.

`FakeWandb` behaves like W&B's public API for what is used here: `Api.artifact("entity/project/name:alias")`
resolves an alias within a collection (or raises, as wandb's CommError does, when it resolves nothing);
saving an artifact with an alias another version holds moves that alias (an alias names one version of
a collection at a time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

import infra.wandb_alias
from infra.wandb_alias import move_production
from tests.unit.test_pipeline import LocalLike, SageMakerLike, held_out_images, run

KEY = "0123456789abcdef0123456789abcdef01234567"  # the shape of a W&B key; not a real one


class CommError(Exception):
    """wandb.errors.CommError's role: what the API raises for an artifact it cannot find."""


class FakeArtifact:
    def __init__(self, store: FakeWandb, collection: str, version: int, aliases: list[str]) -> None:
        self.store, self.collection, self.version = store, collection, version
        self._saved = list(aliases)
        self.aliases = list(aliases)

    def save(self) -> None:
        self.store.saves += 1
        for other in self.store.collections[self.collection]:  # an alias names one version only
            if other is not self:
                other._saved = [a for a in other._saved if a not in self.aliases]
                other.aliases = list(other._saved)
        self._saved = list(self.aliases)


class FakeWandb:
    def __init__(self) -> None:
        self.collections: dict[str, list[FakeArtifact]] = {}
        self.keys: list[str] = []
        self.entities: list[str | None] = []
        self.saves = 0

    def log_model(self, entity: str, project: str, job: str) -> None:
        """What `Tracker.log_model` leaves: a new version aliased latest, candidate and the job name."""
        name = f"{entity}/{project}/{project}-model"
        versions = self.collections.setdefault(name, [])
        for old in versions:
            old._saved = [a for a in old._saved if a not in ("latest", "candidate")]
            old.aliases = list(old._saved)
        versions.append(FakeArtifact(self, name, len(versions), ["latest", "candidate", job]))

    def aliases(self, entity: str, project: str) -> list[list[str]]:
        return [a._saved for a in self.collections[f"{entity}/{project}/{project}-model"]]

    def __call__(self, key: str, entity: str | None) -> FakeWandb:  # the api factory
        self.keys.append(key)
        self.entities.append(entity)
        return self

    def artifact(self, path: str, type: str | None = None) -> FakeArtifact:
        name, _, alias = path.rpartition(":")
        for artifact in self.collections.get(name, []):
            if alias in artifact._saved:
                return artifact
        raise CommError(f"artifact '{path}' not found in '{name.rsplit('/', 1)[0]}'")


def online(job: str, entity: str = "team", project: str = "cv") -> dict[str, Any]:
    return {"id": f"run-{job}", "project": project, "mode": "online", "name": job, "entity": entity}


@pytest.fixture
def fake() -> FakeWandb:
    store = FakeWandb()
    store.log_model("team", "cv", "job-1")
    store.log_model("team", "cv", "job-2")
    return store


def test_promotions_and_a_rollback_move_the_one_production_alias(fake):
    env = {"WANDB_API_KEY": KEY}
    line = move_production(online("job-1"), env, api_factory=fake)
    assert line == "W&B: `production` moved to team/cv/cv-model:job-1"
    assert fake.aliases("team", "cv") == [["job-1", "production"], ["latest", "candidate", "job-2"]]
    move_production(online("job-2"), env, api_factory=fake)
    assert fake.aliases("team", "cv") == [["job-1"], ["latest", "candidate", "job-2", "production"]]
    move_production(online("job-1"), env, api_factory=fake)  # a rollback to v1
    assert fake.aliases("team", "cv") == [["job-1", "production"], ["latest", "candidate", "job-2"]]
    assert fake.keys == [KEY] * 3 and fake.entities == ["team"] * 3
    again = move_production(online("job-1"), env, api_factory=fake)
    assert again == "W&B: `production` already on team/cv/cv-model:job-1" and fake.saves == 3


def test_an_offline_run_or_no_key_moves_nothing_and_says_why(fake):
    offline = {**online("job-1"), "mode": "offline"}
    assert "was offline; `production` alias not moved" in move_production(offline, {}, api_factory=fake)
    assert "no WANDB_API_KEY or MLOPS_WANDB_SECRET_ARN" in move_production(
        online("job-1"), {}, api_factory=fake
    )
    assert "no run recorded" in move_production(None, {"WANDB_API_KEY": KEY}, api_factory=fake)
    assert fake.keys == [] and fake.saves == 0


def test_a_wandb_error_is_a_line_that_never_shows_the_key_and_never_raises(fake):
    line = move_production(online("job-9"), {"WANDB_API_KEY": KEY}, api_factory=fake)
    assert line.startswith("W&B: `production` alias not moved (CommError: artifact 'team/cv/cv-model:job-9'")

    def leaky(key: str, entity: str | None) -> Any:
        raise PermissionError(f"401 for key {key}")

    line = move_production(online("job-1"), {"WANDB_API_KEY": KEY}, api_factory=leaky)
    assert KEY not in line and "401 for key ***" in line


def test_the_key_comes_from_the_secret_when_only_its_arn_is_set(fake, monkeypatch):
    with mock_aws():
        client = boto3.client("secretsmanager", region_name="us-east-1")
        arn = client.create_secret(Name="cv/wandb-api-key", SecretString=f'{{"WANDB_API_KEY": "{KEY}"}}')[
            "ARN"
        ]
        line = move_production(online("job-2"), {"MLOPS_WANDB_SECRET_ARN": arn}, api_factory=fake)
        assert line.endswith("cv-model:job-2") and fake.keys == [KEY]
        missing = arn.replace("wandb-api-key", "nothing")
        line = move_production(online("job-2"), {"MLOPS_WANDB_SECRET_ARN": missing}, api_factory=fake)
        assert "not moved (reading the W&B API key from Secrets Manager secret" in line


@pytest.mark.parametrize("kind", [LocalLike, SageMakerLike], ids=["local", "sagemaker"])
def test_the_pipeline_moves_production_only_when_the_candidate_serves_verified(
    kind, tmp_path: Path, fake, monkeypatch
):
    data = held_out_images(tmp_path)
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setattr(infra.wandb_alias, "_wandb_api", fake)
    platform = kind(tmp_path, metrics={"test_accuracy": 0.95})
    platform.wandb = online("job-1")
    report, _ = run(platform, data)
    assert report.exit_code == 0 and report.wandb_alias == "W&B: `production` moved to team/cv/cv-model:job-1"
    assert "production" in fake.aliases("team", "cv")[0]

    platform.metrics, platform.wandb = {"test_accuracy": 0.97}, online("job-2")
    platform.bad_answers.add(2)  # v2 deploys, then fails its verification and is rolled back to v1
    report, _ = run(platform, data)
    assert report.exit_code != 0 and report.wandb_alias is None and platform.serving == 1
    assert fake.aliases("team", "cv") == [["job-1", "production"], ["latest", "candidate", "job-2"]]
