"""Move the W&B `production` alias to the model that now serves.

Training logs each model as a version of the artifact `<project>-model`, aliased `candidate` and the
job's name (`train/tracking.py`). When a deploy or a rollback ends with a version serving, and that
version's run was online, the alias `production` is put on its artifact version. W&B keeps an alias on
one version of a collection at a time, so adding it moves it from the version that had it: a reviewer
filtering by `production` in W&B sees what the endpoint serves.

The key: WANDB_API_KEY, else the secret MLOPS_WANDB_SECRET_ARN names (`infra.wandb_secret`; the GitHub
role may read that one secret). Whatever W&B says, the deploy's result stands: this returns a line that
says what happened (moved, not moved and why) and never raises.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

PRODUCTION = "production"

ApiFactory = Callable[[str, str | None], Any]  # (api key, entity) -> a wandb.Api


def _wandb_api(key: str, entity: str | None) -> Any:
    import wandb

    return wandb.Api(api_key=key, overrides={"entity": entity} if entity else None, timeout=30)


def _key(env: Mapping[str, str]) -> tuple[str | None, str]:
    """The API key and, when there is none, why."""
    key = env.get("WANDB_API_KEY", "").strip()
    if key:
        return key, ""
    arn = env.get("MLOPS_WANDB_SECRET_ARN", "").strip()
    if not arn:
        return None, "no WANDB_API_KEY or MLOPS_WANDB_SECRET_ARN here"
    from infra.wandb_secret import fetch_wandb_key

    try:
        return fetch_wandb_key(arn), ""
    except RuntimeError as exc:  # its messages name the secret, never its content
        return None, str(exc)


def _not_movable(info: Mapping[str, Any] | None) -> str | None:
    """Why this version's model cannot be aliased, or None."""
    if not info:
        return "W&B: no run recorded for this version; `production` alias not moved"
    if info.get("mode") != "online":
        return (
            f"W&B: run {info.get('id')} was offline; `production` alias not moved "
            "(push the run with `wandb sync`, then alias its model in W&B)"
        )
    if not info.get("project") or not info.get("name"):
        return "W&B: the run's project or job name is not recorded; `production` alias not moved"
    return None


def move_production(
    info: Mapping[str, Any] | None,
    env: Mapping[str, str] | None = None,
    *,
    api_factory: ApiFactory | None = None,
) -> str:
    """Alias the serving version's W&B model `production`; a line saying what was done."""
    env = os.environ if env is None else env
    if (why := _not_movable(info)) is not None:
        return why
    assert info is not None
    project, name = info["project"], info["name"]
    key, why = _key(env)
    if key is None:
        return f"W&B: `production` alias not moved ({why})"
    entity = info.get("entity")
    path = f"{entity + '/' if entity else ''}{project}/{project}-model:{name}"
    try:
        artifact = (api_factory or _wandb_api)(key, entity).artifact(path, type="model")
        if PRODUCTION in artifact.aliases:
            return f"W&B: `production` already on {path}"
        artifact.aliases = [*artifact.aliases, PRODUCTION]
        artifact.save()
    except Exception as exc:  # noqa: BLE001 -- W&B's word must never undo or fail a deploy
        text = str(exc).replace(key, "***")[:300]
        return f"W&B: `production` alias not moved ({type(exc).__name__}: {text})"
    return f"W&B: `production` moved to {path}"
