"""AwsPlatform: the platform protocol on SageMaker, composed from the infra/aws modules.

    train     upload the dataset (content-addressed, skipped when unchanged) -> CreateTrainingJob on spot
              with checkpoints -> wait with status transitions and the CloudWatch log -> download the
              model artifact and read its manifest (the same metrics the local platform reads)
    register  a Model Registry version: serve image by digest, model.tar.gz, metrics, metadata
    deploy    blue/green UpdateEndpoint with auto-rollback alarms (a smoke test during the bake among
              them), silent-rollback detection, smoke test; refused without held-out images unless
              allowed; the production history records what the endpoint serves afterwards
    mark_failed  Rejected, with the failed stage, time and reason (UpdateModelPackage)
    take_down    delete the endpoint (a failed first deployment has nothing to go back to)

Every mutation goes through the executor: with a DryRunExecutor the same code prints the requests.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infra.aws import endpoints, images, production, registry, rollout, storage, training, watch
from infra.aws.errors import NotFound
from infra.aws.plan import Executor
from infra.aws.session import Aws, tags
from infra.channels import channel_prefixes
from infra.errors import MlopsError, UsageError
from infra.history import DOWN, ProductionEvent, now_iso
from infra.platform import DeployResult, EndpointStatus, LineSink, ModelVersion, TrainingResult, TrainingSpec
from infra.settings import Config
from infra.smoke import held_out_samples

APPROVED, REJECTED = "Approved", "Rejected"


class AwsPlatform:
    name = "aws"

    def __init__(
        self,
        aws: Aws,
        config: Config,
        executor: Executor,
        *,
        git_sha: str,
        cache: Path,
        smoke_data: Path | None = None,
        on_event: Callable[[str], None] = print,
        poll_seconds: float = 30.0,
    ) -> None:
        self.aws = aws
        self.config = config
        self.executor = executor
        self.git_sha = git_sha
        self.cache = cache
        self.smoke_data = smoke_data
        self.on_event = on_event
        self.poll_seconds = poll_seconds
        self.project = aws.settings.project
        self.group = registry.group_name(self.project)
        self.endpoint = endpoints.endpoint_name(self.project)
        self._images: dict[str, images.ImageRef] = {}

    def tags(self) -> list[dict[str, str]]:
        return tags(self.aws.settings, git_sha=self.git_sha, expiry_days=self.config.aws.expiry_days)

    # images and data
    def publish_images(self, context: Path) -> dict[str, images.ImageRef]:
        self._images = images.publish(
            self.aws,
            self.project,
            git_sha=self.git_sha,
            context=context,
            executor=self.executor,
            tags=self.tags(),
            on_event=self.on_event,
        )
        return self._images

    def image(self, name: str) -> str:
        """The image for this git SHA, by digest: published in this run, handed on by the workflow job
        that pushed it (MLOPS_TRAIN_IMAGE / MLOPS_SERVE_IMAGE), or found in ECR by its tag."""
        if name in self._images and self._images[name].digest:
            return self._images[name].by_digest
        given = getattr(self.aws.settings, f"{name}_image", None)
        if given:
            if not re.fullmatch(r"[^@\s]+@sha256:[0-9a-f]{64}", given):
                variable = f"MLOPS_{name.upper()}_IMAGE"
                raise UsageError(
                    f"{variable}={given!r} is not an image by digest (REPOSITORY_URI@sha256:...)"
                )
            return str(given)
        repository = images.repository_name(self.project, name)
        try:
            digest = images.image_digest(self.aws, repository, self.git_sha)
        except NotFound:  # the repository itself is missing: nothing was ever published
            digest = None
        if digest is None:
            if self.executor.dry_run:
                # The digest exists only after the push; the plan shows a zero digest in its place.
                self.on_event(
                    f"{name} image: the digest of {repository}:{self.git_sha} is known after publishing; "
                    "the plan shows sha256:000..."
                )
                uri = images.repository_uri(self.aws, repository, dry_run=True)
                return f"{uri}@sha256:{'0' * 64}"
            raise UsageError(
                f"no {name} image tagged {self.git_sha} in ECR repository {repository}; "
                "run `mlops images publish` first"
            )
        return f"{images.repository_uri(self.aws, repository)}@{digest}"

    def upload_data(
        self, local: Path, progress: Callable[[int, int], None] | None = None
    ) -> storage.UploadResult:
        self.aws.settings.require("bucket")
        assert self.aws.settings.bucket is not None
        return storage.upload_dataset(
            self.aws,
            local,
            bucket=self.aws.settings.bucket,
            project=self.project,
            executor=self.executor,
            progress=progress,
        )

    # training
    def job_spec(self, spec: TrainingSpec, channels: dict[str, str]) -> training.JobSpec:
        settings, cfg = self.aws.settings, self.config.aws
        settings.require("bucket", "role_arn")
        base = f"s3://{settings.bucket}/{self.project}"
        return training.JobSpec(
            job_name=spec.job_name,
            image_uri=self.image("train"),
            role_arn=str(settings.role_arn),
            hyperparameters=spec.hyperparameters,
            channels=channels,
            output_uri=f"{base}/models/",
            checkpoint_uri=f"{base}/checkpoints/{spec.job_name}/",
            instance_type=cfg.train_instance_type,
            instance_count=cfg.train_instance_count,
            spot=cfg.spot,
            max_runtime_seconds=cfg.max_runtime_seconds,
            max_wait_seconds=cfg.max_wait_seconds,
            volume_size_gb=cfg.volume_size_gb,
            wandb_secret_arn=settings.wandb_secret_arn,
            code_version=spec.code_version,
            tags=self.tags(),
        )

    def train(self, spec: TrainingSpec, on_line: LineSink) -> TrainingResult:
        self.smoke_data = spec.data
        uploaded = self.upload_data(spec.data)
        on_line(f"dataset {uploaded.uri}: {uploaded.uploaded} uploaded, {uploaded.skipped} unchanged")
        job = self.job_spec(spec, channel_prefixes(spec.data, uploaded.uri))
        training.start(self.aws, job, self.executor)
        if self.executor.dry_run:
            return TrainingResult(spec.job_name, "Planned", None, {}, 0.0, failure_reason="dry run")
        outcome = watch.wait(self.aws, spec.job_name, on_event=on_line, poll_seconds=self.poll_seconds)
        return self._result(outcome)

    def job(self, job_name: str) -> TrainingResult:
        """A SageMaker training job's result, its model downloaded (for `mlops evaluate/register --job`)."""
        return self._result(training.describe(self.aws, job_name))

    def _result(self, outcome: training.TrainingOutcome) -> TrainingResult:
        from artifact.manifest import load_manifest

        billing = outcome.billing()
        if outcome.status != "Completed" or not outcome.model_artifact_uri:
            reason = outcome.failure_reason or f"ended {outcome.status} ({outcome.secondary_status})"
            return TrainingResult(
                outcome.job_name,
                outcome.status,
                None,
                outcome.metrics,
                float(outcome.training_seconds or 0),
                failure_reason=reason,
                billing=billing,
            )
        # The manifest in the artifact is the ground truth for metrics, as on the local platform.
        model_dir = storage.download_model(
            self.aws, outcome.model_artifact_uri, self.cache / outcome.job_name
        )
        manifest = load_manifest(model_dir)
        return TrainingResult(
            outcome.job_name,
            "Completed",
            model_dir,
            dict(manifest.metrics),
            float(outcome.training_seconds or 0),
            wandb=manifest.wandb,
            model_uri=outcome.model_artifact_uri,
            billing=billing,
        )

    # registry
    def _version(self, package: registry.PackageVersion) -> ModelVersion:
        return ModelVersion(
            version=package.version,
            status=package.status,
            metrics=package.metrics,
            model_dir=self.cache / "versions" / f"v{package.version}",
            created_at=package.created,
            source_job=package.metadata.get("training_job", ""),
            code_version=package.metadata.get("git_sha", ""),
            wandb={"id": package.metadata["wandb_run"]} if package.metadata.get("wandb_run") else None,
            uri=package.arn,
            failure=registry.failure(package),
        )

    def register(self, result: TrainingResult, decision: dict[str, Any]) -> ModelVersion:
        if result.model_uri is None and not self.executor.dry_run:
            raise UsageError(
                f"job {result.job_name} has no model artifact to register ({result.failure_reason})"
            )
        registry.ensure_group(self.aws, self.group, self.executor, self.tags())
        wandb = result.wandb or {}
        metadata = {
            "git_sha": self.git_sha,
            "training_job": result.job_name,
            "wandb_run": str(wandb.get("id", "")),
            "wandb_url": str(wandb.get("url", "")),
            "gate": str(decision.get("summary", ""))[:250],
        }
        status = APPROVED if decision.get("passed") else REJECTED
        package = registry.register(
            self.aws,
            self.group,
            image_uri=self.image("serve"),
            model_data_uri=result.model_uri or "<model.tar.gz of the training job>",
            metrics=result.metrics,
            metadata={k: v for k, v in metadata.items() if v},
            status=status,
            description=f"{result.job_name}: {decision.get('summary', '')}"[:1024],
            executor=self.executor,
        )
        return self._version(package)

    def versions(self) -> list[ModelVersion]:
        return [self._version(p) for p in registry.list_versions(self.aws, self.group)]

    def model_dir(self, version: ModelVersion) -> Path:
        """A registered version's model, downloaded (once) from its ModelDataUrl."""
        target = self.cache / "versions" / f"v{version.version}"
        if not (target / "manifest.json").is_file():
            package = registry.get_version(self.aws, self.group, version.version)
            storage.download_model(self.aws, package.model_data_uri, target)
        return target

    def production(self) -> ModelVersion | None:
        state = endpoints.describe(self.aws, self.endpoint)
        if state is None or not state.package_arn:
            return None
        try:
            return self._version(registry.describe_version(self.aws, state.package_arn))
        except NotFound:  # the endpoint serves a package deleted from the registry
            return None

    # endpoint
    def deploy(self, version: int, *, action: str = "deploy", allow_untested: bool = False) -> DeployResult:
        package = registry.get_version(self.aws, self.group, version)
        target = self._version(package)
        if target.status != APPROVED:
            raise UsageError(f"v{version} is {target.state}: only Approved versions are deployed")
        self.aws.settings.require("role_arn", "bucket")
        classes = self._classes(target)
        samples = held_out_samples(self.smoke_data, self.config.local.smoke_images, classes)
        if not samples and not allow_untested and not self.executor.dry_run:
            where = f"{self.smoke_data}/test" if self.smoke_data else "no dataset"
            raise UsageError(
                f"no held-out test images for v{version} ({where}), so it cannot be smoke-tested; pass "
                "--data DIR (a dataset with a test/ split of its classes), or --allow-untested to deploy "
                "it without a smoke test"
            )
        before = self.production()
        outcome = rollout.deploy(
            self.aws,
            project=self.project,
            package_arn=package.arn,
            version=version,
            role_arn=str(self.aws.settings.role_arn),
            config=self.config.aws,
            executor=self.executor,
            tags=self.tags(),
            samples=samples,
            classes=classes,
            on_event=self.on_event,
            poll_seconds=self.poll_seconds,
            image_uri=package.image_uri,
        )
        now = self.production() if not self.executor.dry_run else None
        message = outcome.message
        if outcome.serving_candidate or (now is not None and now.version == version):
            try:
                self._record(version, action, before.version if before else None, outcome.message)
            except (
                MlopsError
            ) as exc:  # the model serves either way: a missing record is not a reason to undo it
                self.on_event(f"the production history was NOT recorded: {exc}")
                message += f" (production history NOT recorded: {exc})"
        return DeployResult(
            outcome.ok,
            now.version if now else (version if outcome.ok else None),
            f"sagemaker://{self.endpoint}",
            message,
            smoke=outcome.smoke,
            previous_version=before.version if before else None,
            tested=bool(samples),
        )

    def _record(self, version: int | None, action: str, previous: int | None, reason: str = "") -> None:
        event = ProductionEvent(version, action, now_iso(), previous, reason[:500])
        production.record(self.aws, str(self.aws.settings.bucket), self.project, event, self.executor)

    def mark_failed(self, version: int, stage: str, reason: str) -> None:
        package = registry.get_version(self.aws, self.group, version)
        self.executor(registry.mark_failed_call(package.arn, stage=stage, reason=reason, at=now_iso()))

    def history(self) -> list[ProductionEvent]:
        self.aws.settings.require("bucket")
        return production.events(self.aws, str(self.aws.settings.bucket), self.project)

    def take_down(self, reason: str) -> str:
        self.aws.settings.require("bucket")
        current = self.production()
        endpoints.delete(self.aws, self.endpoint, self.executor)
        done = f"endpoint {self.endpoint} deleted (its models and configs stay for `mlops cleanup`)"
        try:
            self._record(None, DOWN, current.version if current else None, reason)
        except MlopsError as exc:
            return f"{done}; the production history was NOT recorded: {exc}"
        return done

    def _classes(self, target: ModelVersion) -> list[str]:
        """Class names from the version's own model when we hold it (downloaded after training), else
        the smoke dataset's test split."""
        from artifact.manifest import ArtifactError, load_manifest

        held = self.cache / target.source_job if target.source_job else None
        if held is not None and (held / "manifest.json").is_file():
            try:
                return load_manifest(held).classes
            except ArtifactError:
                pass
        test = self.smoke_data / "test" if self.smoke_data else None
        return sorted(p.name for p in test.iterdir() if p.is_dir()) if test and test.is_dir() else []

    def endpoint_status(self) -> EndpointStatus:
        state = endpoints.describe(self.aws, self.endpoint)
        if state is None:
            return EndpointStatus(False, False, None, None, detail=f"endpoint {self.endpoint} does not exist")
        production = self.production()
        return EndpointStatus(
            state.status in ("InService", "Updating"),
            state.status == "InService",
            production.version if production else None,
            f"sagemaker://{self.endpoint}",
            detail=f"{state.status} on {state.config_name} ({_capacity(state)})"
            + (f": {state.failure_reason}" if state.failure_reason else ""),
        )

    def invoke(self, body: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
        # In the configured endpoint mode: an async endpoint takes only InvokeEndpointAsync (through S3).
        return rollout.platform_sender(self.aws, self.project, self.config.aws)(body, content_type)


def _capacity(state: endpoints.EndpointState) -> str:
    """What the endpoint runs on: `2 x ml.m5.large`, or `serverless` (it has no instances)."""
    if state.instance_type is None:
        return state.mode or "no instances"
    fleet = f"{state.instance_count} x {state.instance_type}"
    return f"{fleet}, async" if state.mode == "async" else fleet
