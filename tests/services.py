"""Real services on loopback for integration tests: an S3-compatible server (moto in server
mode, a real HTTP endpoint that boto3, pyarrow and subprocesses all reach)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

from moto.server import ThreadedMotoServer

S3_TEST_ENV = {
    # Throwaway values for the loopback test server only; never real credentials.
    "AWS_ACCESS_KEY_ID": "trm-lab-test",
    "AWS_SECRET_ACCESS_KEY": "trm-lab-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """Start moto on 127.0.0.1 on a free port; yields the endpoint URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@contextlib.contextmanager
def s3_environment(endpoint: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in [*S3_TEST_ENV, "AWS_ENDPOINT_URL_S3"]}
    os.environ.update(S3_TEST_ENV, AWS_ENDPOINT_URL_S3=endpoint)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def new_bucket(endpoint: str) -> str:
    import boto3

    name = f"trm-test-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        **{
            "aws_access_key_id": S3_TEST_ENV["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": S3_TEST_ENV["AWS_SECRET_ACCESS_KEY"],
            "region_name": S3_TEST_ENV["AWS_DEFAULT_REGION"],
        },
    ).create_bucket(Bucket=name)
    return name
