"""Endpoint modes and their limits: what `mlops deploy` may ask SageMaker for, checked before any call.

    realtime    instances behind InvokeEndpoint (6 MB requests, 60 s per invocation)
    serverless  ServerlessConfig {MemorySizeInMB, MaxConcurrency}: no instances, CPU only, 4 MB requests
    async       an instance variant with AsyncInferenceConfig: requests and answers go through S3
                (InvokeEndpointAsync), up to 1 GB, and the fleet may scale to zero on an empty queue

Pure: no AWS calls, so `infra.settings` can check mlops.toml with it at load time (a pipeline must not
train for an hour and then find its deploy settings impossible). The limits and where they are
documented (Amazon SageMaker AI developer guide and API reference, read 2025):
  - ProductionVariantServerlessConfig: MemorySizeInMB 1024-6144 "in 1 GB increments", MaxConcurrency
    1-200 (API_ProductionVariantServerlessConfig).
  - Serverless feature exclusions: no GPUs (serverless-endpoints.html, "Feature exclusions").
  - "The maximum request and response payload size for serverless invocations is 4 MB"; the container
    has 1 minute per /invocations and 3 minutes to pass /ping (serverless-endpoints-invoke.html).
  - InvokeEndpoint: request and response bodies of at most 6 MB (6291456 bytes), 60 s per invocation
    (API_runtime_InvokeEndpoint).
  - Asynchronous inference: "large payload sizes (up to 1GB), long processing times (up to one hour)";
    an endpoint config with AsyncInferenceConfig takes only asynchronous invocations (async-inference.html).
  - AsyncInferenceClientConfig.MaxConcurrentInvocationsPerInstance 1-1000; S3OutputPath and
    S3FailurePath match `(https|s3)://([^/])/?(.*)`, at most 512 characters (botocore's service model).
  - "Updating a real-time inference endpoint to ... serverless ... is currently not supported"
    (serverless-endpoints-update.html): a mode change is a new endpoint, never an UpdateEndpoint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

REALTIME, SERVERLESS, ASYNC = "realtime", "serverless", "async"
MODES = (REALTIME, SERVERLESS, ASYNC)

MIB = 1024 * 1024
# The front door's cap per mode; the container gets the same value as MLOPS_MAX_PAYLOAD_BYTES, so a
# request that SageMaker lets through is never refused by the server's own 413, and the other way round.
PAYLOAD_CAP = {REALTIME: 6 * MIB, SERVERLESS: 4 * MIB, ASYNC: 1024 * MIB}

SERVERLESS_MEMORY_MB = (1024, 2048, 3072, 4096, 5120, 6144)
SERVERLESS_MAX_CONCURRENCY = (1, 200)
ASYNC_MAX_CONCURRENT_INVOCATIONS = (1, 1000)
_S3_URI = re.compile(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?")
# S3OutputPath takes at most 512 characters; `failures/` (S3FailurePath) and a closing "/" go after it.
_S3_URI_MAX = 512 - len("failures/") - 1

# Accelerated instance families: G and P (NVIDIA GPUs), Inf and Trn (AWS Inferentia and Trainium chips).
_ACCELERATED = re.compile(r"ml\.(g\d|p\d|inf\d|trn\d)[a-z0-9-]*\.")
# A serve image built for a GPU (`--build-arg TORCH_INDEX_URL=https://pypi.org/simple`, see
# Dockerfile.serve) is told apart by its name: a repository or tag with `gpu`, `cuda` or `cu<version>`
# as one of its words, e.g. `<project>-serve-gpu` or `:abc123-cuda`. A digest alone says nothing.
_GPU_WORD = re.compile(r"(^|[-_./:])(gpu|cuda|cu\d{2,3})($|[-_./:])")


def is_accelerated(instance_type: str) -> bool:
    return bool(_ACCELERATED.match(instance_type.strip().lower() + "."))


def is_gpu_image(image_uri: str) -> bool:
    name = image_uri.split("@", 1)[0].lower()
    return bool(_GPU_WORD.search(name.split("/", 1)[-1]))


def async_output_path(configured: str | None, *, bucket: str | None, project: str) -> str | None:
    """Where asynchronous answers land: the configured S3 URI, else `s3://<bucket>/<project>/async-output/`
    (None when neither is known). Always ends with "/" so that SageMaker's object names go under it."""
    if configured:
        return configured if configured.endswith("/") else configured + "/"
    return f"s3://{bucket}/{project}/async-output/" if bucket else None


def async_failure_path(output: str) -> str:
    """S3FailurePath: the error answers next to the good ones, under `<output>failures/`."""
    return output + "failures/"


def async_input_path(output: str) -> str:
    """Where the deploy's own requests (the smoke test, the verification) are put for InvokeEndpointAsync:
    `<output>requests/`, so that one S3 grant to the execution role covers requests and answers."""
    return output + "requests/"


@dataclass(frozen=True)
class Problem:
    setting: str  # the mlops.toml key it is about ([aws] <setting>)
    message: str

    def __str__(self) -> str:
        return f"[aws] {self.setting}: {self.message}"


class ModeSettings(Protocol):
    """The [aws] settings a mode is checked on (infra.settings.AwsConfig has them)."""

    endpoint_mode: str
    endpoint_instance_type: str
    serverless_memory_mb: int
    serverless_max_concurrency: int
    async_output: str | None
    async_max_concurrent_invocations: int


def problems_of(config: ModeSettings, image_uri: str | None = None) -> list[Problem]:
    """`problems` of the configured mode, with the configured knobs."""
    return problems(
        config.endpoint_mode,
        instance_type=config.endpoint_instance_type,
        serverless_memory_mb=config.serverless_memory_mb,
        serverless_max_concurrency=config.serverless_max_concurrency,
        async_output=config.async_output,
        async_max_concurrent_invocations=config.async_max_concurrent_invocations,
        image_uri=image_uri,
    )


def problems(
    mode: str,
    *,
    instance_type: str,
    serverless_memory_mb: int,
    serverless_max_concurrency: int,
    async_output: str | None,
    async_max_concurrent_invocations: int,
    image_uri: str | None = None,
) -> list[Problem]:
    """Every reason SageMaker would refuse (or silently misserve) this mode's endpoint; [] when none.
    The knobs of the other modes are checked too: switching mode later must not reveal an old typo."""
    found: list[Problem] = []
    if mode not in MODES:
        found.append(Problem("endpoint_mode", f"{mode!r} is not one of {', '.join(MODES)}"))
    if serverless_memory_mb not in SERVERLESS_MEMORY_MB:
        found.append(
            Problem(
                "serverless_memory_mb",
                f"{serverless_memory_mb} MB is not a serverless memory size: 1024-6144 MB in 1024 MB steps "
                f"({', '.join(map(str, SERVERLESS_MEMORY_MB))})",
            )
        )
    low, high = SERVERLESS_MAX_CONCURRENCY
    if not low <= serverless_max_concurrency <= high:
        found.append(
            Problem(
                "serverless_max_concurrency",
                f"{serverless_max_concurrency} is outside {low}-{high} concurrent invocations",
            )
        )
    low, high = ASYNC_MAX_CONCURRENT_INVOCATIONS
    if not low <= async_max_concurrent_invocations <= high:
        found.append(
            Problem(
                "async_max_concurrent_invocations",
                f"{async_max_concurrent_invocations} is outside {low}-{high} invocations per instance",
            )
        )
    if async_output is not None and (not _S3_URI.fullmatch(async_output) or len(async_output) > _S3_URI_MAX):
        found.append(
            Problem(
                "async_output",
                f"{async_output!r} is not an S3 URI (s3://BUCKET/PREFIX/, at most {_S3_URI_MAX} characters)",
            )
        )
    if mode == SERVERLESS:
        if is_accelerated(instance_type):
            found.append(
                Problem(
                    "endpoint_instance_type",
                    f"{instance_type} is an accelerated (GPU/Inferentia/Trainium) type, and serverless "
                    'endpoints run on CPU only; use endpoint_mode = "realtime" or "async" for it, or a '
                    "CPU type (e.g. ml.m5.large) to say that CPU is meant",
                )
            )
        if image_uri and is_gpu_image(image_uri):
            found.append(
                Problem(
                    "endpoint_mode",
                    f"the serve image {image_uri} is a GPU build, and serverless endpoints have no GPU; "
                    "deploy it realtime or async on a GPU instance type, or register a CPU build",
                )
            )
    return found
