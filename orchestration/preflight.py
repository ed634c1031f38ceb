"""Checks that run before anything starts: no dataset built, no MLflow experiment created, no Ray.

    from orchestration.preflight import check_values, check_services
    check_values(cfg)       # seeds, scale numbers: one clear error naming key, value, allowed
    check_services(cfg)     # S3 and an MLflow server answer within a short timeout

A bad value would otherwise surface minutes later (a trial with no steps finishes with no
metrics), and an unreachable service after the clients' own retries (66 s for S3, 256 s for
MLflow, measured): here each is one paragraph, raised in seconds.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from typing import Any

CONNECT_TIMEOUT_S = float(os.environ.get("TRM_PREFLIGHT_TIMEOUT_S", "5"))
MISSING_VARIABLE = re.compile(r"Environment variable '([A-Za-z_][A-Za-z0-9_]*)' not found")


class PreflightError(ValueError):
    """A value or a service the command needs is wrong; nothing has started."""


def missing_variable(err: Exception) -> str | None:
    """The environment variable a config interpolation (`${oc.env:NAME}`) did not find."""
    found = MISSING_VARIABLE.search(str(err))
    return found.group(1) if found else None


def _whole(key: str, value: Any, least: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        allowed = f"a whole number >= {least}" + (" or null" if allow_none else "")
        raise PreflightError(f"{key}={value!r} is not allowed; it must be {allowed}")


def check_values(cfg: dict[str, Any]) -> None:
    """The numbers a command sets: seeds and the scale's budget and resources."""
    _whole("seeds", cfg.get("seeds"), 1, allow_none=True)
    scale = cfg["scale"]
    name = f"scale.{{}} (scale {scale.get('name')!r})"
    _whole(name.format("seeds"), scale.get("seeds"), 1, allow_none=True)
    if scale.get("epochs") is None:
        _whole(name.format("steps"), scale.get("steps"), 1)
        _whole(name.format("eval_every"), scale.get("eval_every"), 1)
    else:
        for task, epochs in scale["epochs"].items():
            if not isinstance(epochs, int | float) or isinstance(epochs, bool) or epochs <= 0:
                raise PreflightError(
                    f"{name.format(f'epochs.{task}')}={epochs!r} is not allowed; "
                    "it must be a number > 0"
                )
        _whole(name.format("evaluations"), scale.get("evaluations"), 1)
    _whole(name.format("eval_batch_size"), scale.get("eval_batch_size"), 1)
    _whole(name.format("cpus_per_trial"), scale.get("cpus_per_trial"), 1)
    _whole(name.format("max_failures"), scale.get("max_failures"), 0)
    _whole(name.format("max_concurrent_trials"), scale.get("max_concurrent_trials"), 1, True)


def check_services(cfg: dict[str, Any]) -> None:
    """S3 buckets of `storage` and an http(s) MLflow `tracking.uri` answer, each within
    CONNECT_TIMEOUT_S (TRM_PREFLIGHT_TIMEOUT_S), or one error names the service."""
    buckets: dict[str, list[str]] = {}  # bucket → the storage keys using it
    for key, uri in (cfg.get("storage") or {}).items():
        if isinstance(uri, str) and uri.startswith("s3://"):
            buckets.setdefault(uri.removeprefix("s3://").split("/", 1)[0], []).append(key)
    for bucket, keys in buckets.items():
        _check_bucket(bucket, ", ".join(f"storage.{key}" for key in keys))
    uri = (cfg.get("tracking") or {}).get("uri")
    if isinstance(uri, str) and uri.startswith(("http://", "https://")):
        _check_mlflow(uri)


def _check_bucket(bucket: str, key: str) -> None:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    where = endpoint or "AWS S3"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        config=Config(
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=CONNECT_TIMEOUT_S,
            retries={"max_attempts": 1, "mode": "standard"},
        ),
    )
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "?")
        meaning = {"404": "does not exist", "403": "is not accessible with these credentials"}
        raise PreflightError(
            f"S3 bucket {bucket!r} ({key}) at {where} {meaning.get(code, f'answered {code}')}; "
            "create it or point the storage variables at one that exists"
        ) from None
    except BotoCoreError as err:  # no endpoint, no credentials, timeout
        raise PreflightError(
            f"S3 ({key}, bucket {bucket!r}) at {where} is not reachable within "
            f"{CONNECT_TIMEOUT_S:g} s: {err}. Check AWS_ENDPOINT_URL_S3 and the AWS_* "
            "credentials, or use storage=local"
        ) from None


def _check_mlflow(uri: str) -> None:
    url = f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search"
    request = urllib.request.Request(
        url,
        data=json.dumps({"max_results": 1}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=CONNECT_TIMEOUT_S) as response:
            response.read()
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            return  # it answers; credentials are MLflow's own business (MLFLOW_TRACKING_*)
        raise PreflightError(
            f"the MLflow server at {uri} (tracking.uri) answered HTTP {err.code} to a search; "
            "is it an MLflow tracking server?"
        ) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise PreflightError(
            f"the MLflow server at {uri} (tracking.uri, MLFLOW_TRACKING_URI) is not reachable "
            f"within {CONNECT_TIMEOUT_S:g} s: {reason}. Start it (python -m "
            "orchestration.stack up) or use tracking=local"
        ) from None
