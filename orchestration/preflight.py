"""Checks that run before anything starts: no dataset built, no MLflow experiment created, no Ray.

    from orchestration.preflight import check_values, check_services
    check_values(cfg)       # seeds, scale numbers: one clear error naming key, value, allowed
    check_services(cfg)     # S3 and an MLflow server answer within a short timeout

A bad value would otherwise surface minutes later (a trial with no steps finishes with no
metrics), and an unreachable service after the clients' own retries (66 s for S3, 256 s for
MLflow, measured): here each is one paragraph, raised in seconds.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

CONNECT_TIMEOUT_S = float(os.environ.get("TRM_PREFLIGHT_TIMEOUT_S", "5"))
MISSING_VARIABLE = re.compile(r"Environment variable '([A-Za-z_][A-Za-z0-9_]*)' not found")


class PreflightError(ValueError):
    """A value or a service the command needs is wrong; nothing has started. `cause`: what the
    service answered, without the advice (the outage watch words its own)."""

    def __init__(self, message: str, cause: str | None = None):
        super().__init__(message)
        self.cause = cause or message


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


def _positive(key: str, value: Any, unit: str = "seconds", allow_none: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        allowed = f"a number of {unit} > 0" + (" or null" if allow_none else "")
        raise PreflightError(f"{key}={value!r} is not allowed; it must be {allowed}")


def check_values(cfg: dict[str, Any]) -> None:
    """The numbers a command sets: seeds, the outage watch, the scale's budget and resources."""
    _whole("seeds", cfg.get("seeds"), 1, allow_none=True)
    outage = cfg.get("outage") or {}
    for key in ("after_s", "probe_every_s"):
        _positive(f"outage.{key}", outage.get(key))
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
    _whole(name.format("workers_per_trial"), scale.get("workers_per_trial", 1), 1)
    _whole(name.format("max_failures"), scale.get("max_failures"), 0)
    every = scale.get("checkpoint_every_min")
    if every is not None:
        _positive(name.format("checkpoint_every_min"), every, "minutes", allow_none=True)
    _whole(name.format("max_concurrent_trials"), scale.get("max_concurrent_trials"), 1, True)
    _whole(name.format("full_checkpoints"), scale.get("full_checkpoints"), 1, allow_none=True)


@dataclasses.dataclass(frozen=True)
class Probe:
    """One remote service a command depends on; `check()` raises PreflightError (naming the
    service and what to do) when it does not answer within `timeout_s`."""

    service: str  # "S3" or "MLflow"
    where: str  # e.g. "bucket 'trm' (storage.results) at http://127.0.0.1:9000"
    check: Callable[[], None]


def service_probes(cfg: dict[str, Any], timeout_s: float = CONNECT_TIMEOUT_S) -> list[Probe]:
    """The S3 buckets of `storage` and an http(s) MLflow `tracking.uri`; none for the embedded
    default (a local folder and a sqlite file)."""
    probes = []
    buckets: dict[str, list[str]] = {}  # bucket → the storage keys using it
    for key, uri in (cfg.get("storage") or {}).items():
        if isinstance(uri, str) and uri.startswith("s3://"):
            buckets.setdefault(uri.removeprefix("s3://").split("/", 1)[0], []).append(key)
    for bucket, keys in buckets.items():
        key = ", ".join(f"storage.{key}" for key in keys)
        probes.append(
            Probe(
                "S3",
                f"bucket {bucket!r} ({key}) at {_s3_endpoint() or 'AWS S3'}",
                functools.partial(_check_bucket, bucket, key, timeout_s),
            )
        )
    uri = (cfg.get("tracking") or {}).get("uri")
    if isinstance(uri, str) and uri.startswith(("http://", "https://")):
        probes.append(
            Probe(
                "MLflow",
                f"the tracking server at {uri} (tracking.uri)",
                functools.partial(_check_mlflow, uri, timeout_s),
            )
        )
    return probes


def check_services(cfg: dict[str, Any]) -> None:
    """Every service probe answers within CONNECT_TIMEOUT_S (TRM_PREFLIGHT_TIMEOUT_S), or one
    error names the service."""
    for probe in service_probes(cfg):
        probe.check()


def _s3_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def _check_bucket(bucket: str, key: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    endpoint = _s3_endpoint()
    where = endpoint or "AWS S3"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        config=Config(
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
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
            "create it or point the storage variables at one that exists",
            cause=f"HEAD bucket answered {code}",
        ) from None
    except BotoCoreError as err:  # no endpoint, no credentials, timeout
        raise PreflightError(
            f"S3 ({key}, bucket {bucket!r}) at {where} is not reachable within "
            f"{timeout_s:g} s: {err}. Check AWS_ENDPOINT_URL_S3 and the AWS_* "
            "credentials, or use storage=local",
            cause=str(err),
        ) from None


def _check_mlflow(uri: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    url = f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search"
    request = urllib.request.Request(
        url,
        data=json.dumps({"max_results": 1}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            return  # it answers; credentials are MLflow's own business (MLFLOW_TRACKING_*)
        raise PreflightError(
            f"the MLflow server at {uri} (tracking.uri) answered HTTP {err.code} to a search; "
            "is it an MLflow tracking server?",
            cause=f"a search answered HTTP {err.code}",
        ) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise PreflightError(
            f"the MLflow server at {uri} (tracking.uri, MLFLOW_TRACKING_URI) is not reachable "
            f"within {timeout_s:g} s: {reason}. Start it (python -m "
            "orchestration.stack up) or use tracking=local",
            cause=str(reason),
        ) from None
