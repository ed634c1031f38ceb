"""Every bad input is one clear error naming key, value and what is allowed, raised before a
dataset is built, an MLflow experiment created or Ray started (nothing appears under .trm/)."""

import socket
import time

import pytest

from orchestration.suite import load_suite
from tests.orchestration.test_ablate import ablate


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


S3_ENV = {
    "TRM_DATASET_STORE": "s3://trm/datasets",
    "TRM_RESULTS_URI": "s3://trm/results",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides, env, message",
    [
        (["seeds=0"], {}, "seeds=0 is not allowed; it must be a whole number >= 1"),
        (["seeds=-1"], {}, "seeds=-1 is not allowed"),
        (["seeds=abc"], {}, "seeds='abc' is not allowed"),
        (["scale.steps=0"], {}, "scale.steps (scale 'smoke')=0 is not allowed"),
        (["scale.eval_every=-5"], {}, "scale.eval_every (scale 'smoke')=-5 is not allowed"),
        (["storage=s3"], {}, "reads $TRM_DATASET_STORE, which is not set"),
        (["tracking=server"], {}, "reads $MLFLOW_TRACKING_URI, which is not set"),
        (
            ["storage=s3"],
            {**S3_ENV, "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:{port}"},
            "S3 (storage.datasets, storage.results, bucket 'trm') at http://127.0.0.1:{port} "
            "is not reachable",
        ),
        (
            ["tracking=server"],
            {"MLFLOW_TRACKING_URI": "http://127.0.0.1:{port}"},
            "the MLflow server at http://127.0.0.1:{port} (tracking.uri, MLFLOW_TRACKING_URI) "
            "is not reachable",
        ),
    ],
)
def test_bad_inputs_fail_fast_with_one_clear_error(tmp_path, overrides, env, message):
    port = closed_port()
    env = {k: v.format(port=port) for k, v in env.items()}
    started = time.monotonic()
    result = ablate(tmp_path, "suite=smoke", "scale=smoke", *overrides, env=env, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message.format(port=port) in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: ")
    assert time.monotonic() - started < 60  # seconds, not the clients' minutes of retries
    assert not (tmp_path / ".trm").exists()  # no dataset, no MLflow store, no Ray state


def test_malformed_suite_yaml_names_the_file_and_line(tmp_path):
    (tmp_path / "broken.yaml").write_text("name: broken\ntask: sudoku\nbaseline: {name: [\n")
    message = r"(?s)broken.yaml is not valid YAML: .*broken.yaml\", line 4"
    with pytest.raises(ValueError, match=message):
        load_suite("broken", tmp_path)


def test_a_suite_naming_a_missing_task_lists_the_tasks(tmp_path):
    (tmp_path / "typo.yaml").write_text(
        "name: typo\ntask: sudoku\nbaseline: {name: b, label: B}\n"
        "arms: [{name: a, label: A, task: suduko}]\n"
    )
    with pytest.raises(ValueError, match=r"arms\[0\].task='suduko' is not a task; the tasks are"):
        load_suite("typo", tmp_path)
