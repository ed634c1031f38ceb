"""The local stack against real servers: a moto S3 server process and an `mlflow server`
process on 127.0.0.1, no mocks. The MLflow test takes about 10-25 s (mlflow's start-up);
the rest take a few seconds together."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestration import stack as st

REPO = Path(__file__).resolve().parents[2]
# A value that must never show up anywhere: it stands for the caller's real credentials.
FAKE_REAL_KEY = "AKIAREALKEYNEVERPRINT"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestration.stack", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
    )


def parse_exports(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = shlex.split(value)[0]
    return env


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) members of a process group, read from /proc independently."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in "ZX":
            pids.append(int(stat.parent.name))
    return pids


def wait_gone(pgids: list[int], ports: list[int], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(group_pids(g) for g in pgids) and not any(port_open(p) for p in ports):
            return
        time.sleep(0.1)
    raise AssertionError(
        f"still there after {timeout} s: "
        f"{ {g: group_pids(g) for g in pgids} }, open ports {[p for p in ports if port_open(p)]}"
    )


def listening_addresses(pgids: list[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket the groups' processes listen on."""
    inodes = set()
    for pgid in pgids:
        for pid in group_pids(pgid):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                address, port = local.split(":")
                if len(address) == 8:
                    address = socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1])
                found.add((address, int(port, 16)))
    return found


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


@needs_proc
@pytest.mark.slow
def test_cli_stack_logs_an_mlflow_run_with_artifacts_in_s3(tmp_path):
    directory = tmp_path / "stack"
    secret_env = {"AWS_ACCESS_KEY_ID": FAKE_REAL_KEY, "AWS_SECRET_ACCESS_KEY": FAKE_REAL_KEY}
    try:
        up = cli("up", "--dir", str(directory), "--bucket", "trm-it", env=secret_env)
        assert up.returncode == 0, up.stderr
        env = parse_exports(up.stdout)
        state = json.loads((directory / st.STATE_FILE).read_text())
        services = state["services"]
        pgids = [s["pid"] for s in services.values()]
        ports = [s["port"] for s in services.values()]
        assert len(set(ports)) == 2
        assert env["AWS_ENDPOINT_URL_S3"] == env["MLFLOW_S3_ENDPOINT_URL"] == services["s3"]["url"]
        assert env["MLFLOW_TRACKING_URI"] == services["mlflow"]["url"]
        assert env["TRM_DATASET_STORE"] == "s3://trm-it/datasets"
        assert env["AWS_ACCESS_KEY_ID"] == st.TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"]
        assert FAKE_REAL_KEY not in up.stdout + up.stderr
        # The caller's credentials do not reach the servers either.
        for pid in group_pids(services["mlflow"]["pid"]):
            assert FAKE_REAL_KEY.encode() not in Path(f"/proc/{pid}/environ").read_bytes()
        # Every listening socket of both servers (workers included) is on loopback.
        listening = listening_addresses(pgids)
        assert {p for _, p in listening} >= set(ports)
        assert {a for a, _ in listening} == {"127.0.0.1"}

        # up again: nothing new starts, the same settings come back.
        again = cli("up", "--dir", str(directory), "--bucket", "trm-it")
        assert again.returncode == 0, again.stderr
        assert "already up" in again.stderr
        assert parse_exports(again.stdout) == env
        assert json.loads((directory / st.STATE_FILE).read_text())["services"] == services

        printed = cli("env", "--dir", str(directory), env=secret_env)
        assert printed.returncode == 0, printed.stderr
        assert parse_exports(printed.stdout) == env
        assert FAKE_REAL_KEY not in printed.stdout + printed.stderr
        status = cli("status", "--dir", str(directory))
        assert status.returncode == 0, status.stdout
        assert status.stdout.count("healthy") == 2

        # A run logged through the tracking server; its artifact lands in the moto bucket.
        from mlflow import MlflowClient

        with st.environment(env):
            client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
            experiment = client.create_experiment("stack-test")
            run = client.create_run(experiment).info.run_id
            client.log_param(run, "arch", "trm_mlp")
            client.log_metric(run, "exact_accuracy", 0.5)
            client.log_text(run, "hello from the stack", "notes/hello.txt")
            client.set_terminated(run)
            assert client.get_run(run).data.metrics == {"exact_accuracy": 0.5}
            back = client.download_artifacts(run, "notes/hello.txt", str(tmp_path))
            assert Path(back).read_text() == "hello from the stack"
        objects = st._s3_client(env["AWS_ENDPOINT_URL_S3"]).list_objects_v2(
            Bucket="trm-it", Prefix="mlflow/"
        )
        keys = [o["Key"] for o in objects.get("Contents", [])]
        assert any(k.endswith(f"{run}/artifacts/notes/hello.txt") for k in keys), keys
    finally:
        down = cli("down", "--dir", str(directory))
    assert down.returncode == 0, down.stderr
    assert "stopped" in down.stderr
    wait_gone(pgids, ports, timeout=5)
    assert not (directory / st.STATE_FILE).exists()
    assert (directory / "mlflow.db").exists()  # runs survive a restart; S3 contents do not

    again = cli("down", "--dir", str(directory))
    assert again.returncode == 0 and "nothing was running" in again.stderr
    status = cli("status", "--dir", str(directory))
    assert status.returncode == 1 and "not running" in status.stdout
    printed = cli("env", "--dir", str(directory))
    assert printed.returncode == 1 and "not running" in printed.stderr


@needs_proc
def test_up_twice_is_idempotent_and_down_stops_everything(tmp_path):
    first = st.LocalStack(tmp_path, with_mlflow=False)
    try:
        env = first.up()
        assert first.started
        pid, port = first.state["services"]["s3"]["pid"], first.state["services"]["s3"]["port"]
        second = st.LocalStack(tmp_path, with_mlflow=False)
        assert second.up() == env
        assert not second.started
        assert second.state["services"]["s3"]["pid"] == pid
        assert "MLFLOW_TRACKING_URI" not in env
        assert st._s3_healthy(env["AWS_ENDPOINT_URL_S3"])
    finally:
        assert first.down()
    wait_gone([pid], [port], timeout=5)
    assert not first.down()
    assert not st.LocalStack(tmp_path / "never-started").down()
    assert cli("down", "--dir", str(tmp_path / "nothing")).returncode == 0


@needs_proc
def test_local_stack_stops_the_servers_when_the_block_fails(tmp_path):
    with pytest.raises(KeyError), st.local_stack(tmp_path, with_mlflow=False) as stack:
        pid, port = stack.state["services"]["s3"]["pid"], stack.state["services"]["s3"]["port"]
        assert port_open(port)
        raise KeyError("boom")
    wait_gone([pid], [port], timeout=5)


@needs_proc
def test_servers_die_with_a_killed_owner(tmp_path):
    # The owner gets SIGKILL: no atexit, no finally. The guards notice their lifeline close.
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import json, sys, time\n"
            "from orchestration.stack import LocalStack\n"
            f"stack = LocalStack({str(tmp_path)!r}, with_mlflow=False)\n"
            "stack.up()\n"
            "print(json.dumps(stack.state), flush=True)\n"
            "time.sleep(120)\n",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        state = json.loads(owner.stdout.readline())
        pid, port = state["services"]["s3"]["pid"], state["services"]["s3"]["port"]
        assert port_open(port)
    finally:
        owner.kill()
        owner.wait()
    wait_gone([pid], [port], timeout=10)
    # The stale state file is no obstacle: up() clears it and starts afresh.
    with st.local_stack(tmp_path, with_mlflow=False) as stack:
        assert stack.started
        assert stack.state["services"]["s3"]["pid"] != pid


@pytest.fixture
def taken_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize(
    ("option", "label"), [("s3_port", "S3 server (moto)"), ("mlflow_port", "MLflow server")]
)
def test_a_taken_port_is_a_clear_error(tmp_path, taken_port, option, label):
    stack = st.LocalStack(tmp_path, **{option: taken_port})
    with pytest.raises(st.StackError, match="cannot listen") as error:
        stack.up()
    assert f"{label} cannot listen on 127.0.0.1:{taken_port}" in str(error.value)
    assert not (tmp_path / st.STATE_FILE).exists()


@needs_proc
def test_a_server_that_dies_at_start_shows_its_log(tmp_path, taken_port, monkeypatch):
    # Skip the up-front check so that the real server meets the taken port.
    monkeypatch.setattr(st, "_check_port_free", lambda service, port: None)
    stack = st.LocalStack(tmp_path, s3_port=taken_port, with_mlflow=False)
    with pytest.raises(st.StackError) as error:
        stack.up()
    message = str(error.value)
    assert f"S3 server (moto) failed to start on 127.0.0.1:{taken_port}" in message
    assert "exited during start-up" in message
    assert "Address already in use" in message  # from the tail of s3.log
    assert str(tmp_path / "s3.log") in message
    assert not (tmp_path / st.STATE_FILE).exists()


def test_same_port_for_both_is_refused(tmp_path):
    with pytest.raises(st.StackError, match="different ports"):
        st.LocalStack(tmp_path, s3_port=45000, mlflow_port=45000)


def test_s3_only_serves_a_bucket_and_lets_go_of_its_port():
    with st.s3_only(bucket="data") as s3:
        port = int(s3.endpoint.rsplit(":", 1)[1])
        assert s3.endpoint.startswith("http://127.0.0.1:")
        assert s3.env()["TRM_DATASET_STORE"] == "s3://data/datasets"
        client = s3.client()
        client.put_object(Bucket="data", Key="a/b.txt", Body=b"x")
        assert client.get_object(Bucket="data", Key="a/b.txt")["Body"].read() == b"x"
    assert not port_open(port)


def test_environment_restores_previous_values(monkeypatch):
    monkeypatch.setenv("TRM_DATASET_STORE", "before")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    with st.environment({"TRM_DATASET_STORE": "s3://x/datasets", "AWS_ENDPOINT_URL_S3": "e"}):
        assert os.environ["TRM_DATASET_STORE"] == "s3://x/datasets"
    assert os.environ["TRM_DATASET_STORE"] == "before"
    assert "AWS_ENDPOINT_URL_S3" not in os.environ


def test_the_printed_settings_are_fixed_test_values(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_REAL_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_REAL_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", FAKE_REAL_KEY)
    env = st._client_env("http://127.0.0.1:1", "trm", "http://127.0.0.1:2")
    server_env = st._server_env("http://127.0.0.1:1", {})
    assert FAKE_REAL_KEY not in st._exports(env)
    assert FAKE_REAL_KEY not in json.dumps(server_env)
    assert "AWS_SESSION_TOKEN" not in server_env
    assert all(
        v.startswith("http://127.0.0.1:") for k, v in env.items() if "URL" in k or "URI" in k
    )
