"""Weights & Biases: every training run is a W&B run; offline (no key, no network) unless a key is set.

Mode: `WANDB_MODE` when the user sets it (`offline`, `online`, `disabled`), else online with
`WANDB_API_KEY`, else offline. On SageMaker the job carries no key, only `MLOPS_WANDB_SECRET_ARN`: the
key is then read from Secrets Manager (`infra.wandb_secret`, the one infra module in the image) into this
process's environment, where wandb looks for it; if that fails the run is offline, with a warning that
never shows key material. Offline runs land in `output/data/wandb/offline-run-*` (uploaded with the
job's output on SageMaker; push them later with `wandb sync <dir>`). If an online init fails (bad key,
no network) the run falls back to offline rather than failing the training job. W&B's console capture
is off: our metric lines reach stdout unchanged, for SageMaker's regexes and the local platform.

What a reviewer filters by (`run_context`): the run is named after the job, grouped by git SHA, and
tagged with the SHA, the trigger, the instance type and spot or on-demand; its config records them with
a link to the SageMaker job. The model is logged as an artifact aliased `candidate` (and the job name);
`mlops deploy` and `rollback` move `production` to the version that serves (`infra/wandb_alias.py`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

SECRET_ARN_VARIABLE = "MLOPS_WANDB_SECRET_ARN"  # noqa: S105 -- the variable's name, not a secret


def run_context(env: Mapping[str, str]) -> dict[str, Any]:
    """Group, tags and config entries of a run, from the job's environment: MLOPS_CODE_VERSION,
    MLOPS_TRIGGER, MLOPS_INSTANCE_TYPE and MLOPS_SPOT (set by the platforms), and on SageMaker
    TRAINING_JOB_NAME and AWS_REGION for the console link."""
    code = (env.get("MLOPS_CODE_VERSION") or "unknown")[:12]
    trigger = env.get("MLOPS_TRIGGER") or "cli"
    job = env.get("TRAINING_JOB_NAME")
    instance = env.get("MLOPS_INSTANCE_TYPE") or ("unknown" if job else "local")
    spot = (env.get("MLOPS_SPOT") or "").strip().lower()
    tags = [f"git:{code}", f"trigger:{trigger}", f"instance:{instance}"]
    if spot in ("true", "false"):
        tags.append("spot" if spot == "true" else "on-demand")
    config: dict[str, Any] = {
        "mlops/code_version": code,
        "mlops/trigger": trigger,
        "mlops/instance_type": instance,
        "mlops/spot": spot == "true",
    }
    region = env.get("AWS_REGION")
    if job and region:
        config["mlops/sagemaker_job"] = (
            f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/jobs/{job}"
        )
    # W&B caps a tag at 64 characters.
    return {"group": f"git-{code}", "tags": [t[:64] for t in tags], "config": config}


class Tracker:
    def __init__(
        self,
        directory: Path,
        *,
        project: str,
        name: str,
        config: Mapping[str, Any],
        run_id: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.directory = directory
        self.project = project
        self.name = name
        self.config = dict(config)
        self.run_id = run_id
        self.env = os.environ if env is None else env
        self.run: Any = None
        self.mode = self.resolve_mode()

    def resolve_mode(self) -> str:
        """`offline`, `online` or `disabled`. Fetches the key from its secret when only the ARN is set
        and the run may go online; an explicit WANDB_MODE=offline/disabled fetches nothing."""
        explicit = self.env.get("WANDB_MODE", "").strip().lower()
        if explicit == "dryrun":
            explicit = "offline"
        if explicit in ("offline", "disabled"):
            return explicit
        has_key = bool(self.env.get("WANDB_API_KEY"))
        arn = self.env.get(SECRET_ARN_VARIABLE, "").strip()
        if not has_key and arn:
            has_key = self._load_key(arn)
        if explicit == "online":
            return "online"  # without a key wandb.init fails and start() falls back to offline
        return "online" if has_key else "offline"

    def _load_key(self, secret_arn: str) -> bool:
        """Put the key from the secret into os.environ (this process and the W&B service it starts)."""
        try:
            from infra.wandb_secret import fetch_wandb_key

            key = fetch_wandb_key(secret_arn)
        except Exception as exc:  # noqa: BLE001 -- a W&B problem must never cost a training job
            # The leaf's RuntimeErrors name the secret, never its content; anything else, only its type.
            detail = str(exc) if isinstance(exc, RuntimeError | ImportError) else type(exc).__name__
            print(f"WARNING: W&B API key not loaded ({detail}); logging offline", file=sys.stderr, flush=True)
            return False
        os.environ["WANDB_API_KEY"] = key
        return True

    def start(self) -> None:
        if self.mode == "disabled":
            return
        import wandb

        self.directory.mkdir(parents=True, exist_ok=True)
        settings = wandb.Settings(console="off", silent=True, x_disable_stats=True, save_code=False)

        def init(mode: Literal["online", "offline"]) -> Any:
            context = run_context(self.env)
            return wandb.init(
                mode=mode,
                settings=settings,
                project=self.project,
                name=self.name,
                group=context["group"],
                tags=context["tags"],
                notes=context["config"].get("mlops/sagemaker_job"),
                config={**self.config, **context["config"]},
                job_type="train",
                dir=str(self.directory),
                id=self.run_id,
                resume="allow",
            )

        try:
            self.run = init("online" if self.mode == "online" else "offline")
        except Exception as exc:  # any W&B failure must not cost a training job
            if self.mode != "online":
                raise
            print(
                f"WARNING: W&B online init failed ({exc}); logging offline instead",
                file=sys.stderr,
                flush=True,
            )
            self.mode = "offline"
            self.run = init("offline")
        self.run_id = self.run.id

    def log(self, values: Mapping[str, float], step: int) -> None:
        if self.run is not None:
            self.run.log(dict(values), step=step)

    def log_final(self, metrics: Mapping[str, float], classes: list[str], confusion: list[list[int]]) -> None:
        if self.run is None:
            return
        import wandb

        for key, value in metrics.items():
            self.run.summary[key] = value
        rows = [
            [classes[t], classes[p], confusion[t][p]]
            for t in range(len(classes))
            for p in range(len(classes))
        ]
        table = wandb.Table(columns=["actual", "predicted", "count"], data=rows)
        self.run.log({"test/confusion_matrix": table})

    def log_model(self, model_dir: Path, metadata: Mapping[str, Any]) -> None:
        if self.run is None:
            return
        import wandb

        artifact = wandb.Artifact(name=f"{self.project}-model", type="model", metadata=dict(metadata))
        artifact.add_dir(str(model_dir))
        # `candidate` until a deploy moves `production` to it; the job name finds it from the registry.
        self.run.log_artifact(artifact, aliases=["latest", "candidate", self.name])

    def log_samples(self, samples: list[tuple[Any, str, str, float]]) -> None:
        """A table of test images with their label, the prediction and its probability."""
        if self.run is None or not samples:
            return
        import wandb

        rows = [[wandb.Image(image), label, predicted, prob] for image, label, predicted, prob in samples]
        table = wandb.Table(columns=["image", "label", "predicted", "probability"], data=rows)
        self.run.log({"test/samples": table})

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        if self.run is None or not rows:
            return
        import wandb

        names: list[str | int] = list(columns)
        self.run.log({key: wandb.Table(columns=names, data=rows)})

    def log_detections(self, samples: list[dict[str, Any]], names: list[str]) -> None:
        """A table of test images, each with the model's boxes (pixel xyxy, caption `class score`) and the
        labelled ones (normalised xyxy) as W&B box overlays a reviewer can toggle, with their counts.

        A sample: {"image": HWC RGB uint8, "predicted": [(x1, y1, x2, y2, class_id, score)],
        "truth": [(class_id, x1, y1, x2, y2)] with coordinates in 0..1}."""
        if self.run is None or not samples:
            return
        import wandb

        labels = dict(enumerate(names))
        rows = []
        for sample in samples:
            predicted = [
                {
                    "position": {"minX": x1, "maxX": x2, "minY": y1, "maxY": y2},
                    "domain": "pixel",
                    "class_id": int(c),
                    "box_caption": f"{names[int(c)]} {score:.2f}",
                    "scores": {"confidence": float(score)},
                }
                for x1, y1, x2, y2, c, score in sample["predicted"]
            ]
            truth = [
                {
                    "position": {"minX": x1, "maxX": x2, "minY": y1, "maxY": y2},
                    "class_id": int(c),
                    "box_caption": names[int(c)],
                }
                for c, x1, y1, x2, y2 in sample["truth"]
            ]
            boxes = {
                "predictions": {"box_data": predicted, "class_labels": labels},
                "ground_truth": {"box_data": truth, "class_labels": labels},
            }
            top = max((float(p[5]) for p in sample["predicted"]), default=0.0)
            rows.append(
                [wandb.Image(sample["image"], boxes=boxes), len(truth), len(predicted), round(top, 4)]
            )
        table = wandb.Table(columns=["image", "objects", "detections", "top_score"], data=rows)
        self.run.log({"test/samples": table})

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None

    def info(self) -> dict[str, Any] | None:
        if self.mode == "disabled" or self.run_id is None:
            return None
        info: dict[str, Any] = {
            "id": self.run_id,
            "project": self.project,
            "mode": self.mode,
            "name": self.name,
        }
        run = self.run
        if run is not None:
            info["dir"] = str(Path(run.dir).parent)
            if self.mode == "online":
                info["url"] = run.url
                info["entity"] = getattr(
                    run, "entity", None
                )  # where `mlops deploy` finds the model to alias `production`
        return info
