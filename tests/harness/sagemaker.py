"""A moto server on 127.0.0.1 that behaves like SageMaker where moto alone does not (a test utility).

moto keeps SageMaker's state (jobs, models, endpoint configs, endpoints, the Model Registry) and every
other service the pipeline uses, but runs nothing: a training job is Completed at once with no model,
UpdateEndpoint does not exist, and InvokeEndpoint answers a fixed body. Here, inside the same server:

    CreateTrainingJob  runs the real training program under the training contract: a job directory in
                       the SageMaker layout (hyperparameters.json from the request, the S3 channels
                       downloaded), `python -m train train`, then model.tar.gz uploaded to
                       `<S3OutputPath>/<job>/output/model.tar.gz`, or the job marked Failed with the
                       program's output/failure as its FailureReason
    UpdateEndpoint     switches the endpoint to the new endpoint config (a blue/green update whose bake
                       has ended; the Stubber tests cover the bake and SageMaker's own rollbacks)
    InvokeEndpoint     is answered by the real serving program (`python -m serve serve` on a free port,
                       one per model and container environment) holding the model the endpoint's config
                       points at, resolved as SageMaker does: endpoint -> endpoint config -> model ->
                       model package -> model data; the model's PrimaryContainer.Environment (e.g.
                       MLOPS_MAX_PAYLOAD_BYTES) is the program's environment, as in a SageMaker container.
                       An endpoint whose config has AsyncInferenceConfig refuses it (ValidationError), as
                       SageMaker does: it takes only asynchronous invocations
    InvokeEndpointAsync reads the request from InputLocation (S3), has the serving program answer it,
                       and writes the answer to `<S3OutputPath>/<id>.out`, or SageMaker's error message to
                       `<S3FailurePath>/<id>-error.out`, before it answers 202 with both locations (SageMaker
                       does the work later; the caller polls either way). moto alone answers a fixed body
                       and ignores the endpoint config
    broken             model data URIs (or job names in them) whose endpoint answers HTTP 500, for the
                       failure paths

Every process it starts is stopped by `stop()`, even after a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import boto3

from infra.local.endpoint import serve_command
from tests.conftest import free_port

REGION = "us-east-1"
ACCOUNT = "123456789012"
CHANNELS = ("train", "validation", "test")


class FakeSageMaker:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.broken: set[str] = set()
        self.break_next = False  # the next job trained leaves a model whose endpoint answers 500
        self.trained: list[str] = []  # job names, in the order they ran
        self._servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        self._lock = threading.Lock()
        self._restore: list[tuple[Any, str, Any]] = []
        self._server: Any = None
        self.session = boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        )

    # --- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> FakeSageMaker:
        from moto.server import ThreadedMotoServer

        self._patch()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        reset_moto(self.url)
        return self

    def stop(self) -> None:
        for proc, _port in self._servers.values():
            proc.terminate()
        for proc, _port in self._servers.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._servers.clear()
        if self._server is not None:
            self._server.stop()
        for owner, name, original in reversed(self._restore):
            setattr(owner, name, original)
        self._restore.clear()

    def __enter__(self) -> FakeSageMaker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.url)

    def env(self) -> dict[str, str]:
        """What a process needs to talk to this server instead of AWS (and nothing of the real one)."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_CONFIG_FILE": str(self.root / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.root / "no-aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    # --- the patches ---------------------------------------------------------------------------------
    def _set(self, owner: Any, name: str, value: Any) -> None:
        self._restore.append((owner, name, owner.__dict__.get(name)))
        setattr(owner, name, value)

    def _patch(self) -> None:
        from moto.core.responses import ActionResult
        from moto.sagemaker.models import SageMakerModelBackend
        from moto.sagemaker.responses import SageMakerResponse
        from moto.sagemakerruntime.responses import SageMakerRuntimeResponse

        fake = self
        create_training_job = SageMakerModelBackend.create_training_job

        def create_and_run(backend: Any, training_job_name: str, **kwargs: Any) -> Any:
            job = create_training_job(backend, training_job_name=training_job_name, **kwargs)
            fake._train(job)
            return job

        def update_endpoint(response: Any) -> Any:
            backend = response.sagemaker_backend
            name = response._get_param("EndpointName")
            endpoint = backend.endpoints[name]
            config = backend.endpoint_configs[response._get_param("EndpointConfigName")]
            endpoint.endpoint_config_name = config.endpoint_config_name
            endpoint.production_variants = endpoint._process_production_variants(config.production_variants)
            return ActionResult({"EndpointArn": endpoint.arn})

        def invoke_endpoint(response: Any) -> Any:
            name = response._get_param("EndpointName")
            if fake._async_config(name) is not None:
                error = {
                    "__type": "ValidationError",
                    "message": f"Endpoint {name} is an asynchronous endpoint: use InvokeEndpointAsync",
                }
                return 400, _error_headers(400), json.dumps(error)
            content_type = response.headers.get("Content-Type", "application/octet-stream")
            body = response.body if isinstance(response.body, bytes) else str(response.body).encode()
            status, answer, answer_type = fake._invoke(name, body, content_type)
            headers = {"Content-Type": answer_type, "x-Amzn-Invoked-Production-Variant": "AllTraffic"}
            if status != 200:
                # What SageMaker says when the container answers an error: ModelError, HTTP 424.
                text = answer.decode(errors="replace")
                error = {
                    "__type": "ModelError",
                    "message": f'Received server error ({status}) from primary with message "{text}"',
                    "OriginalStatusCode": status,
                    "OriginalMessage": text,
                }
                return 424, _error_headers(424), json.dumps(error)
            return 200, headers, answer

        def invoke_endpoint_async(response: Any) -> Any:
            return fake._invoke_async(response)

        self._set(SageMakerModelBackend, "create_training_job", create_and_run)
        self._set(SageMakerResponse, "update_endpoint", update_endpoint)
        # Raw bytes in (moto would decode the PNG body as UTF-8 and fail).
        self._set(SageMakerRuntimeResponse, "use_raw_body", True)
        self._set(SageMakerRuntimeResponse, "invoke_endpoint", invoke_endpoint)
        self._set(SageMakerRuntimeResponse, "invoke_endpoint_async", invoke_endpoint_async)

    # --- training ------------------------------------------------------------------------------------
    def _train(self, job: Any) -> None:
        name = job.training_job_name
        job_dir = self.root / "sagemaker-jobs" / name
        config = job_dir / "input" / "config"
        config.mkdir(parents=True, exist_ok=True)
        (config / "hyperparameters.json").write_text(json.dumps(job.hyper_parameters or {}))
        channels = {c["ChannelName"]: c for c in job.input_data_config}
        (config / "inputdataconfig.json").write_text(
            json.dumps({c: {"TrainingInputMode": "File"} for c in channels})
        )
        (config / "resourceconfig.json").write_text(
            json.dumps({"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"})
        )
        s3 = self.client("s3")
        for channel, spec in channels.items():
            self._download_prefix(
                s3, spec["DataSource"]["S3DataSource"]["S3Uri"], job_dir / "input/data" / channel
            )
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLOPS_", "SM_"))},
            "SAGEMAKER_BASE_DIR": str(job_dir),
            "WANDB_MODE": "offline",
            "WANDB_SILENT": "true",
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        }
        started = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-m", "train", "train"],
            env=env,
            cwd=job_dir,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        (job_dir / "train.log").write_text(run.stdout + run.stderr)
        seconds = int(time.monotonic() - started) + 1
        job.training_time_in_seconds = seconds
        job.billable_time_in_seconds = max(1, seconds // 3) if job.enable_managed_spot_training else seconds
        self.trained.append(name)
        if self.break_next:
            self.broken.add(f"/{name}/")
            self.break_next = False
        if run.returncode != 0:
            failure = job_dir / "output" / "failure"
            job.training_job_status = job.secondary_status = "Failed"
            job.failure_reason = failure.read_text()[:1024] if failure.is_file() else run.stderr[-1024:]
            return
        output = job.output_data_config["S3OutputPath"].rstrip("/")
        archive = job_dir / "model.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for path in sorted((job_dir / "model").rglob("*")):
                tar.add(path, arcname=path.relative_to(job_dir / "model").as_posix(), recursive=False)
        bucket, key = _split(f"{output}/{name}/output/model.tar.gz")
        s3.upload_file(str(archive), bucket, key)

    @staticmethod
    def _download_prefix(s3: Any, uri: str, dest: Path) -> None:
        bucket, prefix = _split(uri)
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", []):
                target = dest / item["Key"][len(prefix) :].lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, item["Key"], str(target))

    # --- hosting -------------------------------------------------------------------------------------
    def model_data(self, endpoint: str) -> str:
        """The model data an endpoint serves, resolved the way SageMaker resolves it."""
        sm = self.client("sagemaker")
        config = sm.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
        variant = sm.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"][0]
        container = sm.describe_model(ModelName=variant["ModelName"]).get("PrimaryContainer", {})
        if container.get("ModelDataUrl"):
            return str(container["ModelDataUrl"])
        package = sm.describe_model_package(ModelPackageName=container["ModelPackageName"])
        return str(package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"])

    def _environment(self, endpoint: str) -> dict[str, str]:
        """The serving container's Environment (CreateModel's PrimaryContainer.Environment)."""
        sm = self.client("sagemaker")
        config = sm.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
        variant = sm.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"][0]
        container = sm.describe_model(ModelName=variant["ModelName"]).get("PrimaryContainer", {})
        return {str(k): str(v) for k, v in (container.get("Environment") or {}).items()}

    def _async_config(self, endpoint: str) -> dict[str, Any] | None:
        sm = self.client("sagemaker")
        try:
            config = sm.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
        except sm.exceptions.ClientError:
            return None  # no such endpoint: InvokeEndpoint says so itself
        answer = sm.describe_endpoint_config(EndpointConfigName=config)
        return answer.get("AsyncInferenceConfig") or None

    def _invoke_async(self, response: Any) -> Any:
        name = response.path.split("/")[2]
        headers = {k.lower(): v for k, v in response.headers.items()}
        config = self._async_config(name)
        if config is None:
            error = {
                "__type": "ValidationError",
                "message": f"Endpoint {name} is not an asynchronous endpoint",
            }
            return 400, _error_headers(400), json.dumps(error)
        inference_id = headers.get("x-amzn-sagemaker-inference-id") or f"fake-{time.time_ns()}"
        content_type = headers.get("x-amzn-sagemaker-content-type", "application/octet-stream")
        outputs = config["OutputConfig"]
        output = f"{outputs['S3OutputPath'].rstrip('/')}/{inference_id}.out"
        failure = (
            f"{outputs.get('S3FailurePath', outputs['S3OutputPath']).rstrip('/')}/{inference_id}-error.out"
        )
        s3 = self.client("s3")
        bucket, key = _split(headers["x-amzn-sagemaker-inputlocation"])
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        status, answer, answer_type = self._invoke(name, body, content_type)
        if status == 200:
            bucket, key = _split(output)
            s3.put_object(Bucket=bucket, Key=key, Body=answer, ContentType=answer_type)
        else:  # what SageMaker writes when the container answers an error
            bucket, key = _split(failure)
            text = answer.decode(errors="replace")
            message = f'Received server error ({status}) from primary with message "{text}"'
            s3.put_object(Bucket=bucket, Key=key, Body=message.encode())
        location = {
            "X-Amzn-SageMaker-OutputLocation": output,
            "X-Amzn-SageMaker-FailureLocation": failure,
            "Content-Type": "application/json",
            "status": "202",
        }
        return 202, location, json.dumps({"InferenceId": inference_id})

    def _invoke(self, endpoint: str, body: bytes, content_type: str) -> tuple[int, bytes, str]:
        data = self.model_data(endpoint)
        if any(mark in data for mark in self.broken):
            return 500, b'{"error": "broken on purpose"}', "application/json"
        port = self._server_for(data, self._environment(endpoint))
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=body,
            headers={"Content-Type": content_type},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return answer.status, answer.read(), answer.headers.get("Content-Type", "application/json")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), "application/json"

    def _server_for(self, model_data: str, environment: dict[str, str] | None = None) -> int:
        """The serving program on the model at `model_data` with the container `environment` (started
        once per pair, on a free port)."""
        environment = environment or {}
        served = f"{model_data} {json.dumps(environment, sort_keys=True)}"
        with self._lock:
            if served in self._servers:
                return self._servers[served][1]
            model_dir = Path(tempfile.mkdtemp(dir=self.root, prefix="endpoint-model-"))
            archive = model_dir.parent / f"{model_dir.name}.tar.gz"
            bucket, key = _split(model_data)
            self.client("s3").download_file(bucket, key, str(archive))
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(model_dir, filter="data")
            port = free_port()
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLOPS_"))},
                **environment,
                "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
            }
            # The child keeps its own copy of the descriptor; ours is closed at once.
            with (self.root / f"{model_dir.name}.log").open("wb") as log:
                proc = subprocess.Popen(
                    serve_command(model_dir, "127.0.0.1", port),
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            self._servers[served] = (proc, port)
            _wait_for_ping(port, proc)
            return port


def _error_headers(status: int) -> dict[str, str]:
    """moto takes a handler's HTTP status from its "status" header, not from the tuple's first item:
    without it an error would reach the client as a 200 with an error body."""
    return {"Content-Type": "application/x-amz-json-1.1", "status": str(status)}


def _wait_for_ping(port: int, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the serving program exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the serving program did not answer /ping on {port} within {timeout:.0f}s")


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def image_manifest() -> str:
    """An image manifest for ECR PutImage: what `mlops images publish` leaves behind on a runner."""
    digest = "sha256:" + "a" * 64
    layer = "sha256:" + "b" * 64
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": 7023,
                "digest": digest,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": 32654,
                    "digest": layer,
                }
            ],
        }
    )


__all__ = ["ACCOUNT", "REGION", "FakeSageMaker", "image_manifest"]


def reset_moto(url: str) -> None:
    """Empty every moto backend. moto keeps its state in module-level backends that every server in
    the process shares, so without this a server started by one test module sees the registry,
    endpoints and buckets that an earlier module left behind."""
    import urllib.request

    with urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=30):
        pass
