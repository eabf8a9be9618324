"""LocalPlatform: the platform protocol on this machine (subprocess jobs, file registry, local endpoint)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from infra.errors import DeployFailed, UsageError
from infra.history import DOWN, ProductionEvent
from infra.local.endpoint import LocalEndpoint
from infra.local.files import read_json
from infra.local.jobs import load_result, prepare_job_dir, run_job
from infra.local.registry import APPROVED, REJECTED, LocalRegistry
from infra.platform import DeployResult, EndpointStatus, LineSink, ModelVersion, TrainingResult, TrainingSpec
from infra.smoke import held_out_samples


class LocalPlatform:
    name = "local"

    def __init__(
        self, home: Path, *, host: str = "127.0.0.1", port: int = 8080, smoke_images: int = 16
    ) -> None:
        self.home = home
        self.jobs_root = home / "jobs"
        self.registry = LocalRegistry(home / "registry")
        self.endpoint = LocalEndpoint(home / "endpoint", host, port)
        self.smoke_images = smoke_images

    # training
    def train(self, spec: TrainingSpec, on_line: LineSink) -> TrainingResult:
        job_dir = prepare_job_dir(self.jobs_root, spec)
        return run_job(job_dir, spec, on_line)

    def resume(self, job_name: str, on_line: LineSink) -> TrainingResult:
        job = read_json(self.jobs_root / job_name / "job.json", None)
        if job is None:
            raise UsageError(f"no local training job named {job_name!r} under {self.jobs_root}")
        hyperparameters = read_json(self.jobs_root / job_name / "input/config/hyperparameters.json", {})
        spec = TrainingSpec(job_name, hyperparameters, Path(job["data"]), job["code_version"])
        return run_job(self.jobs_root / job_name, spec, on_line)

    def job(self, job_name: str) -> TrainingResult:
        return load_result(self.jobs_root, job_name)

    def job_data(self, job_name: str) -> Path | None:
        job = read_json(self.jobs_root / job_name / "job.json", None)
        return Path(job["data"]) if job else None

    # registry
    def register(self, result: TrainingResult, decision: dict[str, Any]) -> ModelVersion:
        if result.model_dir is None:
            raise UsageError(f"job {result.job_name} has no model to register ({result.failure_reason})")
        status = APPROVED if decision.get("passed") else REJECTED
        return self.registry.register(
            result.model_dir, source_job=result.job_name, status=status, gate=decision
        )

    def versions(self) -> list[ModelVersion]:
        return self.registry.versions()

    def production(self) -> ModelVersion | None:
        return self.registry.production()

    def model_dir(self, version: ModelVersion) -> Path:
        return version.model_dir

    # endpoint
    def deploy(self, version: int, *, action: str = "deploy", allow_untested: bool = False) -> DeployResult:
        target = self.registry.get(version)
        if target.status != APPROVED:
            raise UsageError(f"v{version} is {target.state}: only Approved versions are deployed")
        manifest = read_json(target.model_dir / "manifest.json", {})
        classes = list(manifest.get("classes", []))
        samples = held_out_samples(self.job_data(target.source_job), self.smoke_images, classes)
        if not samples and not allow_untested:
            raise UsageError(
                f"no held-out test images found for v{version} (from job {target.source_job}), so it "
                "cannot be smoke-tested; pass --allow-untested to deploy it without a smoke test"
            )
        before = self.endpoint.state()
        previous = int(before["version"]) if before else None
        try:
            smoke = self.endpoint.deploy(version, target.model_dir, samples, classes)
        except DeployFailed as exc:
            now = self.endpoint.state()
            return DeployResult(
                False,
                int(now["version"]) if now else None,
                now["url"] if now else None,
                str(exc),
                previous_version=previous,
            )
        self.registry.set_production(version, action)
        untested = "" if samples else " (NOT smoke-tested: deployed with --allow-untested)"
        return DeployResult(
            True,
            version,
            self.endpoint.url(),
            f"v{version} is serving at {self.endpoint.url()}{untested}",
            smoke=smoke if samples else None,
            previous_version=previous,
            tested=bool(samples),
        )

    def mark_failed(self, version: int, stage: str, reason: str) -> None:
        self.registry.mark_failed(version, stage, reason)

    def history(self) -> list[ProductionEvent]:
        return self.registry.events()

    def take_down(self, reason: str) -> str:
        stopped = self.endpoint.stop()
        if self.registry.production() is not None or stopped is not None:
            self.registry.set_production(None, DOWN, reason)
        return f"the local endpoint process (v{stopped}) was stopped" if stopped else "no process was running"

    def endpoint_status(self) -> EndpointStatus:
        return self.endpoint.status()

    def invoke(self, body: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
        return self.endpoint.invoke(body, content_type)

    def stop_endpoint(self) -> int | None:
        """`mlops endpoint stop` frees the port on this machine; the registry's production version (the
        champion the next candidate is compared with) stays, and the next deploy starts it again."""
        return self.endpoint.stop()
