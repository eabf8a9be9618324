"""The GitHub Actions workflows, run offline: pipeline.yml, rollback.yml and cleanup.yml executed job by
job by the harness (tests/harness/workflow.py: every `run:` step as bash in `needs` order, with real
GITHUB_OUTPUT, GITHUB_ENV and GITHUB_STEP_SUMMARY files; `uses:` steps skipped and listed) against a moto
server that trains with the real training program and answers InvokeEndpoint with the real serving
program (tests/harness/sagemaker.py).

What a reviewer of a run relies on, shown end to end:
  - a dispatch with good inputs reaches a deployed, verified version, and its summary holds the gate table
    and the cost line;
  - a bad input fails the first job, naming the input, and nothing is built or started;
  - a candidate the gate rejects is registered as Rejected and never deployed;
  - a candidate whose endpoint fails its smoke test is rolled back, and the deploy job fails;
  - rollback.yml puts back the version that served before (skipping Rejected ones), and says so;
  - cleanup.yml reports, and deletes only when dispatched with confirm=delete.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infra.datasets import make_synthetic
from tests.harness.sagemaker import FakeSageMaker, image_manifest
from tests.harness.workflow import WorkflowResult, run_workflow

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"
SHA = "0123456789ab"
ROLE = "arn:aws:iam::123456789012:role/wf-sagemaker-execution"
BUCKET = "wf-bucket"
CONFIG = """
[project]
name = "wf"
[gate]
version = 7
min = {{ test_accuracy = {min_accuracy} }}
compare = ["test_accuracy"]
tolerance = 0.5
[train]
hyperparameters = {{ arch = "smallcnn", epochs = "2", batch_size = "32", learning_rate = "0.05" }}
[local]
hyperparameters = {{ arch = "smallcnn", epochs = "2", batch_size = "32", learning_rate = "0.05" }}
smoke_images = 4
verify_images = 6
[aws]
bake_seconds = 60
"""
INPUTS = {"epochs": "2", "hyperparameters": '{"seed": 1}', "max_runtime_minutes": "30"}


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    root = tmp_path_factory.mktemp("workflows")
    with FakeSageMaker(root) as fake:
        fake.client("s3").create_bucket(Bucket=BUCKET)
        data = root / "data"
        make_synthetic(data, classes=3, train_per_class=24, val_per_class=6, test_per_class=6)
        for project in ("wf", "wfreject"):
            for image in ("train", "serve"):
                ecr = fake.client("ecr")
                ecr.create_repository(repositoryName=f"{project}-{image}", imageTagMutability="IMMUTABLE")
                ecr.put_image(
                    repositoryName=f"{project}-{image}", imageManifest=image_manifest(), imageTag=SHA
                )
        configs = {}
        for name, minimum in (("pass", 0.0), ("reject", 0.999)):
            configs[name] = root / f"mlops-{name}.toml"
            configs[name].write_text(CONFIG.format(min_accuracy=minimum))
        env = runner_env(fake, root, configs["pass"])
        upload = subprocess.run(
            [sys.executable, "-m", "infra.cli", "data", "upload", "--data", str(data)],
            env={**env, "MLOPS_PROJECT": "wf", "MLOPS_BUCKET": BUCKET},
            capture_output=True,
            text=True,
            check=False,
        )
        assert upload.returncode == 0, upload.stdout + upload.stderr
        uri = next(w.rstrip(":") for w in upload.stdout.split() if w.startswith("s3://"))
        yield {"fake": fake, "root": root, "configs": configs, "data_uri": uri}


def runner_env(fake: FakeSageMaker, root: Path, config: Path) -> dict[str, str]:
    """A bare runner: this machine's PATH and Python, the moto server as AWS, nothing of the real one."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLOPS_", "GITHUB_", "WANDB_"))}
    return {
        **keep,
        **fake.env(),
        "MLOPS_HOME": str(root / "runner-home"),
        "MLOPS_CONFIG": str(config),
        # A runner's checkout is clean; this work tree may not be, and a -dirty SHA cannot tag an image.
        "MLOPS_CODE_VERSION": SHA,
        "WANDB_MODE": "offline",
        "COLUMNS": "200",
    }


def variables(aws: dict[str, Any], project: str = "wf") -> dict[str, str]:
    return {
        "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/wf-github",
        "AWS_REGION": "us-east-1",
        "MLOPS_PROJECT": project,
        "MLOPS_BUCKET": BUCKET,
        "MLOPS_SAGEMAKER_ROLE_ARN": ROLE,
        "MLOPS_DATA": aws["data_uri"],
    }


def run(aws: dict[str, Any], workflow: str, *, config: str = "pass", project: str = "wf", **kwargs: Any):
    env = runner_env(aws["fake"], aws["root"], aws["configs"][config])
    return run_workflow(
        WORKFLOWS / workflow,
        cwd=REPO,
        env=env,
        vars=variables(aws, project),
        github={"repository": "acme/vision", "sha": SHA * 3 + "0123", "ref": "refs/heads/main"},
        timeout=600,
        **kwargs,
    )


def explain(result: WorkflowResult) -> str:
    return "\n".join(
        f"--- {job}: {result.jobs[job].result}\n{result.log(job)[-4000:]}" for job in result.order
    )


def serving(aws: dict[str, Any], endpoint: str = "wf-endpoint") -> str:
    """The model data the endpoint serves now, read from the (fake) SageMaker itself."""
    return aws["fake"].model_data(endpoint)


def test_a_bad_input_fails_the_first_job_naming_it_and_nothing_starts(aws):
    trained = list(aws["fake"].trained)
    result = run(aws, "pipeline.yml", inputs={**INPUTS, "epochs": "zero"})
    assert result.jobs["validate"].result == "failure"
    log = result.log("validate")
    assert "::error title=Invalid input --epochs::" in log and "'zero' is not an integer" in log
    for job in ("images", "train", "evaluate", "deploy"):
        assert result.jobs[job].result == "skipped", explain(result)
    assert aws["fake"].trained == trained  # no training job was started


def test_a_push_to_main_validates_with_the_defaults_of_mlops_toml(aws):
    result = run(aws, "pipeline.yml", event="push", jobs=["validate"])
    assert result.jobs["validate"].result == "success", explain(result)
    outputs = result.jobs["validate"].outputs
    assert json.loads(outputs["hyperparameters"])["arch"] == "smallcnn"  # [train] of the config
    assert outputs["spot"] == "true" and outputs["job_name"].startswith("wf-")


def test_a_candidate_the_gate_rejects_is_registered_rejected_and_never_deployed(aws):
    result = run(aws, "pipeline.yml", config="reject", project="wfreject", inputs=INPUTS)
    assert result.jobs["evaluate"].result == "success", explain(result)
    assert result.jobs["evaluate"].outputs["approved"] == "false"
    assert result.jobs["deploy"].result == "skipped"
    assert "REJECTED: it will not be deployed" in result.summary
    assert "| test_accuracy | threshold |" in result.summary and "FAIL" in result.summary
    sm = aws["fake"].client("sagemaker")
    assert not sm.list_endpoints(NameContains="wfreject")["Endpoints"]
    packages = sm.list_model_packages(ModelPackageGroupName="wfreject-classification")[
        "ModelPackageSummaryList"
    ]
    assert [p["ModelApprovalStatus"] for p in packages] == ["Rejected"]


def test_good_inputs_reach_a_deployed_verified_version_with_the_gate_and_the_cost_in_the_summary(aws):
    result = run(aws, "pipeline.yml", inputs=INPUTS)
    assert result.order == ["validate", "images", "train", "evaluate", "deploy"]
    for job in result.order:
        assert result.jobs[job].result == "success", explain(result)
    assert result.jobs["train"].environment == "training"
    assert result.jobs["deploy"].environment == "production"
    job_name = result.jobs["train"].outputs["job_name"]
    assert job_name in aws["fake"].trained
    # The images job handed on the digests, and the jobs pinned them.
    assert "@sha256:" in result.jobs["images"].outputs["train_image"]
    assert f"/{job_name}/" in serving(aws)
    summary = result.summary
    assert "### Quality gate v7" in summary and "| test_accuracy | threshold |" in summary
    assert "**Billing:** job " + job_name in summary and "$" in summary  # the cost line
    assert "sagemaker/home?region=us-east-1#/jobs/" + job_name in summary  # the console link
    assert "**Serving after:** v1" in summary and "verified: 6 test images" in summary
    skipped = {uses.split("@")[0] for _job, _step, uses in result.skipped_uses}
    assert "aws-actions/configure-aws-credentials" in skipped and "actions/checkout" in skipped


def test_a_candidate_failing_its_smoke_test_is_rolled_back_and_the_deploy_job_fails(aws):
    before = serving(aws)
    second = run(aws, "pipeline.yml", inputs=INPUTS)  # v2, a good one, replaces v1 (UpdateEndpoint)
    assert second.jobs["deploy"].result == "success", explain(second)
    v2 = serving(aws)
    assert v2 != before
    aws["fake"].break_next = True  # v3's model will answer HTTP 500
    third = run(aws, "pipeline.yml", inputs=INPUTS)
    assert third.jobs["evaluate"].outputs["approved"] == "true", explain(third)
    assert third.jobs["deploy"].result == "failure", explain(third)
    assert serving(aws) == v2  # rolled back: the version that served before serves again
    assert "**Serving after:** v2" in third.summary and "FAILED (exit 5)" in third.summary
    sm = aws["fake"].client("sagemaker")
    packages = sm.list_model_packages(ModelPackageGroupName="wf-classification", SortOrder="Ascending")
    statuses = [p["ModelApprovalStatus"] for p in packages["ModelPackageSummaryList"]]
    assert statuses == ["Approved", "Approved", "Rejected"]


def test_rollback_puts_back_the_version_that_served_before_and_says_so(aws):
    result = run(aws, "rollback.yml", inputs={"endpoint": "wf-endpoint"})
    assert result.jobs["rollback"].result == "success", explain(result)
    assert result.jobs["rollback"].environment == "production"
    assert "**Serving before:** v2" in result.summary and "**Serving after:** v1" in result.summary
    assert "### Production history" in result.summary
    wrong = run(aws, "rollback.yml", inputs={"endpoint": "someone-elses-endpoint"})
    assert wrong.jobs["rollback"].result == "failure"
    assert "is not this project's endpoint (wf-endpoint)" in wrong.log("rollback")


def test_cleanup_reports_on_schedule_and_deletes_only_when_confirmed(aws):
    report = run(aws, "cleanup.yml", event="schedule")
    assert report.jobs["cleanup"].result == "success", explain(report)
    assert "## cleanup (report only)" in report.summary
    sm = aws["fake"].client("sagemaker")
    assert sm.describe_endpoint(EndpointName="wf-endpoint")["EndpointStatus"] == "InService"
    confirmed = run(aws, "cleanup.yml", inputs={"confirm": "delete"})
    assert confirmed.jobs["cleanup"].result == "success", explain(confirmed)
    assert "## cleanup (--apply)" in confirmed.summary
