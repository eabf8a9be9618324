"""What a command hands to GitHub Actions when it runs in a workflow: job outputs ($GITHUB_OUTPUT, read by
later jobs as `needs.<job>.outputs.<name>`) and the job summary ($GITHUB_STEP_SUMMARY, what a reviewer
reads on the run's page). Outside a workflow both are no-ops, so every command can call them."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path


def in_workflow() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def write_outputs(values: Mapping[str, str]) -> None:
    """Append `name=value` lines (a heredoc for values with a newline, as GitHub documents)."""
    target = os.environ.get("GITHUB_OUTPUT")
    if not target:
        return
    with Path(target).open("a") as fh:
        for key, value in values.items():
            text = str(value)
            if "\n" in text:
                delimiter = f"EOF_{secrets.token_hex(8)}"
                fh.write(f"{key}<<{delimiter}\n{text}\n{delimiter}\n")
            else:
                fh.write(f"{key}={text}\n")


def write_summary(markdown: str) -> None:
    """Append Markdown to the job summary, a blank line apart from what is already there (a heading
    straight after a list item would be read as part of it)."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if target:
        path = Path(target)
        gap = "\n" if path.is_file() and path.stat().st_size else ""
        with path.open("a") as fh:
            fh.write(gap + (markdown if markdown.endswith("\n") else markdown + "\n"))


def training_job_url(region: str, job_name: str) -> str:
    """The SageMaker console page of a training job."""
    return f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/jobs/{job_name}"


def endpoint_url(region: str, endpoint: str) -> str:
    return f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/endpoints/{endpoint}"
