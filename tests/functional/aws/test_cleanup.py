"""Cleanup: the project's own idle or orphaned SageMaker resources are found, planned and deleted; nothing
of another project ever is.

moto holds the estate (it makes endpoints InService at once and keeps no Invocations data unless a test
puts some). moto completes training jobs at once, so the over-budget rule is driven through its own seam,
`overdue_training_jobs(sagemaker_client, ...)`, with a botocore Stubber answering ListTrainingJobs: the
Stubber still checks the request and the response against SageMaker's real service model.
"""

from __future__ import annotations

import sys
import types
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.stub import Stubber

from infra.aws.cleanup import Finding, Ownership, apply, overdue_training_jobs, owned, scan
from infra.aws.errors import AwsError
from infra.aws.plan import Call, DryRunExecutor, LiveExecutor
from infra.settings import AwsConfig
from tests.functional.aws.conftest import REGION, ROLE

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/demo-serve:abc"
CONFIG = AwsConfig()  # idle_endpoint_days=7, job_budget_hours=4
LATER = datetime.now(UTC) + timedelta(days=30)  # everything created now is older than the idle window


def tagged(project: str | None) -> dict:
    return {"Tags": [{"Key": "mlops:project", "Value": project}]} if project else {}


def make_model(sm, name, project):
    sm.create_model(
        ModelName=name,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": f"s3://demo-bucket/{name}/model.tar.gz"},
        **tagged(project),
    )


def make_config(sm, name, model, project):
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": model,
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
        **tagged(project),
    )


def make_endpoint(sm, name, config, project):
    sm.create_endpoint(EndpointName=name, EndpointConfigName=config, **tagged(project))


@pytest.fixture(autouse=True)
def _moto_endpoint_config_arn(monkeypatch):
    """moto 5.2.5 stores an endpoint config's ARN as a 1-tuple (`self.arn = (self.endpoint_config_arn,)` in
    moto/sagemaker/models.py), so its tag:GetResources answers "('arn:...',)". AWS answers the ARN itself:
    make moto do the same for these tests."""
    from moto.sagemaker.models import FakeEndpointConfig

    fixed = property(lambda self: self.endpoint_config_arn, lambda self, _value: None)
    monkeypatch.setattr(FakeEndpointConfig, "arn", fixed, raising=False)


@pytest.fixture
def estate(aws):
    """demo: a serving stack with no traffic, a config nothing uses, a model nothing references, and an
    untagged model with the demo- prefix; other: the same waste, which demo's cleanup must never touch."""
    sm = aws.client("sagemaker")
    for project in ("demo", "other"):
        make_model(sm, f"{project}-model-live", project)
        make_config(sm, f"{project}-config-live", f"{project}-model-live", project)
        make_endpoint(sm, f"{project}-endpoint", f"{project}-config-live", project)
        make_config(sm, f"{project}-config-unused", f"{project}-model-live", project)
        make_model(sm, f"{project}-model-orphan", project)
    make_model(sm, "demo-model-untagged", None)
    return sm


def names(sm):
    return {
        "endpoints": {e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]},
        "configs": {c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]},
        "models": {m["ModelName"] for m in sm.list_models()["Models"]},
    }


def kinds_and_names(findings):
    return [(f.kind, f.name) for f in findings]


EXPECTED = [
    ("endpoint", "demo-endpoint"),
    ("endpoint-config", "demo-config-unused"),
    ("model", "demo-model-orphan"),
]


def test_owned_lists_what_carries_the_project_tag_and_nothing_else(aws, estate):
    found = {(r["service"], r["type"], r["name"]) for r in owned(aws, "demo")}
    assert found == {
        ("sagemaker", "model", "demo-model-live"),
        ("sagemaker", "model", "demo-model-orphan"),
        ("sagemaker", "endpoint-config", "demo-config-live"),
        ("sagemaker", "endpoint-config", "demo-config-unused"),
        ("sagemaker", "endpoint", "demo-endpoint"),
    }
    assert all(r["tags"] == {"mlops:project": "demo"} for r in owned(aws, "demo"))


def test_idle_endpoint_unused_config_and_orphan_model_of_this_project_are_flagged(aws, estate):
    findings = scan(aws, "demo", CONFIG, now=LATER)
    assert kinds_and_names(findings) == EXPECTED
    reasons = {f.name: f.reason for f in findings}
    assert reasons["demo-endpoint"].startswith("no invocations in the last 7 days (InService since ")
    assert reasons["demo-config-unused"] == "not used by any endpoint"
    assert reasons["demo-model-orphan"] == "not referenced by any endpoint config"
    assert [(f.action.operation, f.action.params) for f in findings if f.action] == [
        ("DeleteEndpoint", {"EndpointName": "demo-endpoint"}),
        ("DeleteEndpointConfig", {"EndpointConfigName": "demo-config-unused"}),
        ("DeleteModel", {"ModelName": "demo-model-orphan"}),
    ]
    assert all(f.action and f.action.service == "sagemaker" and f.action.why for f in findings)
    # demo-model-live stays: demo-config-unused still references it. Untagged demo-* is not ours by tag.
    assert not [f for f in findings if "other" in f.name or "untagged" in f.name]


def test_young_endpoints_and_fresh_orphans_are_left_alone(aws, estate):
    # The endpoint has not existed for a whole idle window; the orphans are inside the deploy grace time.
    assert scan(aws, "demo", CONFIG, now=datetime.now(UTC)) == []


def test_an_endpoint_with_invocations_is_not_idle(aws, estate):
    aws.client("cloudwatch").put_metric_data(
        Namespace="AWS/SageMaker",
        MetricData=[
            {
                "MetricName": "Invocations",
                "Dimensions": [
                    {"Name": "EndpointName", "Value": "demo-endpoint"},
                    {"Name": "VariantName", "Value": "AllTraffic"},
                ],
                "Timestamp": LATER - timedelta(days=2),
                "Value": 3.0,
            }
        ],
    )
    assert ("endpoint", "demo-endpoint") not in kinds_and_names(scan(aws, "demo", CONFIG, now=LATER))


def test_a_dry_run_prints_the_delete_requests_and_deletes_nothing(aws, estate):
    before = names(estate)
    lines: list[str] = []
    count = apply(scan(aws, "demo", CONFIG, now=LATER), DryRunExecutor(emit=lines.append))
    assert count == 3
    assert [line.split("  #")[0] for line in lines] == [
        "sagemaker.DeleteEndpoint",
        "sagemaker.DeleteEndpointConfig",
        "sagemaker.DeleteModel",
    ]
    assert '"EndpointName": "demo-endpoint"' in lines[0]
    assert names(estate) == before


def test_a_live_apply_deletes_the_projects_waste_and_only_that(aws, estate):
    before = names(estate)
    assert apply(scan(aws, "demo", CONFIG, now=LATER), LiveExecutor(aws.client)) == 3
    after = names(estate)
    assert before["endpoints"] - after["endpoints"] == {"demo-endpoint"}
    assert before["configs"] - after["configs"] == {"demo-config-unused"}
    assert before["models"] - after["models"] == {"demo-model-orphan"}
    # With its endpoint gone the live config is unused now; its model goes on the run after that.
    assert kinds_and_names(scan(aws, "demo", CONFIG, now=LATER)) == [("endpoint-config", "demo-config-live")]


def test_an_idle_endpoint_goes_with_its_rollback_alarms(aws, estate):
    from infra.aws import endpoints
    from infra.settings import AlarmConfig

    live = LiveExecutor(aws.client)
    for call in endpoints.alarm_calls("demo-endpoint", AlarmConfig()):
        live(call)
    findings = [f for f in scan(aws, "demo", CONFIG, now=LATER) if f.kind == "endpoint"]
    assert apply(findings, live, delete_endpoint=lambda name: endpoints.delete(aws, name, live)) == 1
    assert "demo-endpoint" not in names(estate)["endpoints"]
    alarms = aws.client("cloudwatch").describe_alarms(AlarmNames=endpoints.alarm_names("demo-endpoint"))
    assert alarms["MetricAlarms"] == []


def test_resources_already_gone_are_skipped(aws, estate):
    findings = scan(aws, "demo", CONFIG, now=LATER)
    assert apply(findings, LiveExecutor(aws.client)) == 3
    assert apply(findings, LiveExecutor(aws.client)) == 0


def test_one_failed_action_does_not_stop_the_others():
    class Failing:
        dry_run = False

        def __init__(self) -> None:
            self.ran: list[str] = []

        def __call__(self, call: Call) -> dict:
            if call.params.get("ModelName") == "b":
                raise AwsError("DeleteModel failed with AccessDeniedException", code="AccessDeniedException")
            self.ran.append(next(iter(call.params.values())))
            return {}

    findings = [
        Finding("model", n, "orphan", Call("sagemaker", "DeleteModel", {"ModelName": n})) for n in "abc"
    ]
    executor = Failing()
    with pytest.raises(AwsError, match=r"1 action\(s\) failed \(2 done\): model b: DeleteModel failed"):
        apply([*findings, Finding("model", "d", "no action", None)], executor)
    assert executor.ran == ["a", "c"]


def test_without_access_to_tags_ownership_falls_back_to_the_name_prefix(aws, estate):
    with Stubber(aws.client("resourcegroupstaggingapi")) as tagging:
        tagging.add_client_error("get_resources", "AccessDeniedException", "not authorized: tag:GetResources")
        findings = scan(aws, "demo", CONFIG, now=LATER)
    assert kinds_and_names(findings) == [*EXPECTED, ("model", "demo-model-untagged")]
    assert all(
        "[owned by name prefix demo-: tags unavailable (AccessDeniedException)]" in f.reason for f in findings
    )


def test_idle_endpoints_carry_their_monthly_cost_when_prices_are_known(aws, estate, monkeypatch):
    # Whatever infra/aws/costs.py says today, this test supplies its own price list.
    prices = types.SimpleNamespace(
        endpoint_monthly_cost=lambda instance_type, count: {"ml.m5.large": 84.1}[instance_type] * count
    )
    monkeypatch.setitem(sys.modules, "infra.aws.costs", prices)
    endpoint = scan(aws, "demo", CONFIG, now=LATER)[0]
    assert (endpoint.name, endpoint.monthly_cost) == ("demo-endpoint", pytest.approx(84.1))


def test_without_the_costs_module_the_cost_is_left_unknown(aws, estate, monkeypatch):
    monkeypatch.setitem(sys.modules, "infra.aws.costs", None)  # import now raises ImportError
    findings = scan(aws, "demo", CONFIG, now=LATER)
    assert kinds_and_names(findings) == EXPECTED
    assert [f.monthly_cost for f in findings] == [None, None, None]


def test_completed_training_jobs_are_never_flagged(aws, estate):
    # moto ends every job Completed at once; whatever its age, a finished job costs nothing.
    aws.client("sagemaker").create_training_job(
        TrainingJobName="demo-job-1",
        AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        RoleArn=ROLE,
        OutputDataConfig={"S3OutputPath": "s3://demo-bucket/jobs"},
        ResourceConfig={"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50},
        StoppingCondition={"MaxRuntimeInSeconds": 3600},
        Tags=[{"Key": "mlops:project", "Value": "demo"}],
    )
    assert "training-job" not in {f.kind for f in scan(aws, "demo", CONFIG, now=LATER)}


def job(name: str, age: timedelta, now: datetime) -> dict:
    return {
        "TrainingJobName": name,
        "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:training-job/{name}",
        "CreationTime": now - age,
        "TrainingJobStatus": "InProgress",
    }


@pytest.mark.parametrize("tags_readable", [True, False], ids=["by-tag", "by-prefix"])
def test_training_jobs_running_past_the_budget_are_stopped(tags_readable):
    now = datetime(2030, 1, 1, 12, tzinfo=UTC)
    jobs = [
        job("demo-overdue", timedelta(hours=5), now),
        job("demo-recent", timedelta(hours=1), now),
        job("other-overdue", timedelta(hours=9), now),
    ]
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    with Stubber(sagemaker) as stub:
        stub.add_response(
            "list_training_jobs", {"TrainingJobSummaries": jobs}, {"StatusEquals": "InProgress"}
        )
        who = (
            Ownership("demo", frozenset(j["TrainingJobArn"] for j in jobs[:2]))
            if tags_readable
            else Ownership("demo", None, note="tags unavailable (AccessDeniedException)")
        )
        findings = overdue_training_jobs(sagemaker, who=who, config=CONFIG, now=now)
        stub.assert_no_pending_responses()
    assert kinds_and_names(findings) == [("training-job", "demo-overdue")]
    assert findings[0].reason.startswith("InProgress for 5.0 h, over the 4 h job budget")
    assert findings[0].action is not None
    assert (findings[0].action.operation, findings[0].action.params) == (
        "StopTrainingJob",
        {"TrainingJobName": "demo-overdue"},
    )
