"""A real multi-node Ray cluster on this machine and a suite submitted to it through the Ray
Jobs API, as KubeRay's RayJob does: `python -m orchestration.stack up --ray-workers 2` (S3,
MLflow, a head and two worker nodes, each `ray start` with its own temp dir, on 127.0.0.1 with
token auth), then `ray job submit -- <the RayJob's entrypoint for scale=smoke>`. No mocks; every
process the test started is ended by PID by `down`, and checked gone.

The slow tests take about 50 s each on 2 cores (measured: cluster up 14-17 s, the smoke suite
from submission to SUCCEEDED 27-33 s, `down` 4-5 s; the node-loss test 55 s); the others are
quick checks of the parts."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from orchestration import cluster
from orchestration import stack as st
from orchestration.command import entrypoint
from orchestration.ray_session import SOCKET_PATH_MAX, SOCKET_SUFFIX_LEN
from tests.orchestration.test_ablate import runs
from tests.orchestration.test_loopback import LOOPBACK, listening_sockets
from tests.orchestration.test_stack import cli, parse_exports

RAY = Path(sys.executable).with_name("ray")
SMOKE_TRIALS = {"trm/seed0", "trm/seed1", "one_step_grad/seed0", "one_step_grad/seed1"}
needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


# --- helpers ---------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) of a process, None when gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[19])


def running(pid: int, started: int | None = None) -> bool:
    """Alive and not a zombie (a zombie holds no resources and runs nothing); with `started`,
    only the process that started then (pids are reused: pid_max may be 32768)."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X") and started in (None, stat[1])


def started_pids(state: dict) -> dict[int, int]:
    """{pid: start time} of every live process of the stack: the guards' groups and each Ray
    node's processes."""
    pids: set[int] = set()
    for svc in state["services"].values():
        pids |= set(st._group_members(svc["pid"]) or [])
        if "temp_dir" in svc:
            pids |= set(cluster.node_processes(svc["temp_dir"]))
    pids.discard(os.getpid())
    return {pid: stat[1] for pid in pids if (stat := _stat(pid))}


def http_json(url: str, token_file: Path, timeout: float = 10) -> dict | list:
    """GET from the head's dashboard with the cluster's token (read from its file, as Ray's
    clients do; never printed)."""
    request = urllib.request.Request(url)
    request.add_header("Authorization", f"Bearer {token_file.read_text().strip()}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=timeout) as response:
        return json.loads(response.read())


def pid_nodes(dashboard: str, token_file: Path) -> dict[int, str]:
    """{pid: node name} of every actor Ray knows of, dead ones included, from the head's state
    API: the node comes from Ray (the actor's node id, and that node's `trm-node` label)."""
    nodes = http_json(f"{dashboard}/api/v0/nodes?limit=1000&detail=1", token_file)
    label = {
        n["node_id"]: n.get("labels", {}).get(cluster.NODE_LABEL)
        for n in nodes["data"]["result"]["result"]
    }
    actors = http_json(f"{dashboard}/api/v0/actors?limit=1000&detail=1", token_file)
    return {
        int(a["pid"]): label.get(a["node_id"])
        for a in actors["data"]["result"]["result"]
        if a.get("pid")
    }


# --- quick checks of the parts ---------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        ({"ray_workers": -1}, "--ray-workers must be a whole number from 0 to 16, got -1"),
        ({"ray_workers": 2.5}, "--ray-workers must be a whole number from 0 to 16, got 2.5"),
        ({"ray_workers": 1, "ray_worker_cpus": 0}, "--ray-worker-cpus must be a whole number"),
        ({"ray_workers": 1, "with_mlflow": False}, "a Ray cluster needs the MLflow server too"),
    ],
)
def test_bad_cluster_sizes_are_refused_before_anything_starts(tmp_path, options, message):
    with pytest.raises(st.StackError) as err:
        st.LocalStack(tmp_path, **options)
    assert message in str(err.value)
    assert not (tmp_path / st.STATE_FILE).exists()


def test_the_command_line_refuses_a_bad_worker_count(tmp_path):
    result = cli("up", "--dir", str(tmp_path), "--ray-workers", "17")
    assert result.returncode == 1
    assert "stack: error: --ray-workers must be a whole number from 0 to 16, got 17" in (
        result.stderr
    )
    assert not (tmp_path / st.STATE_FILE).exists()


def test_restarting_ray_needs_a_stack_with_a_cluster(tmp_path):
    result = cli("restart-ray", "--dir", str(tmp_path))
    assert result.returncode == 1
    assert "stack: error: the local stack is not running in" in result.stderr
    (tmp_path / st.STATE_FILE).write_text(json.dumps({"bucket": "trm", "services": {}}))
    result = cli("restart-ray", "--dir", str(tmp_path))
    assert result.returncode == 1 and "has no Ray cluster; start one with" in result.stderr


def test_a_node_temp_dir_is_short_enough_for_rays_sockets(tmp_path):
    deep = tmp_path / ("d" * 60) / "stack"
    temp = cluster.node_temp_dir(deep, "ray-worker-1")
    assert len(str(temp)) + SOCKET_SUFFIX_LEN <= SOCKET_PATH_MAX
    link = cluster.node_home(deep, "ray-worker-1") / "tmp"
    assert link.is_symlink() and link.resolve() == temp.resolve()
    assert cluster.node_temp_dir(deep, "ray-worker-1") == temp  # stable
    assert cluster.node_temp_dir(deep, "ray-worker-2") != temp  # one per node
    cluster.remove_node_folders(deep)
    assert not temp.exists() and not (deep / "ray").exists()


def test_a_node_gets_the_services_and_none_of_the_callers_ray_or_aws_settings(tmp_path):
    caller = {
        "PATH": "/usr/bin",
        "AWS_SECRET_ACCESS_KEY": "AKIAREALKEYNEVERPRINT",
        "RAY_ADDRESS": "10.1.1.1:6379",
        "RAY_AUTH_TOKEN": "a-token-of-the-caller",
    }
    with st.environment(caller):
        base = st._server_env("http://127.0.0.1:1", {})
    services = {
        **st._client_env("http://127.0.0.1:1", "trm", "http://127.0.0.1:2"),
        **st._results_env("trm"),
    }
    env = cluster.node_env(base, services, tmp_path)
    assert "AKIAREALKEYNEVERPRINT" not in json.dumps(env)
    assert "RAY_ADDRESS" not in env and "RAY_AUTH_TOKEN" not in env
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_AUTH_TOKEN_PATH"] == str(tmp_path / "ray" / "auth_token")
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    for key in ("TRM_DATASET_STORE", "TRM_RESULTS_URI", "MLFLOW_TRACKING_URI",
                "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID"):  # fmt: skip
        assert env[key] == services[key]


def test_the_token_file_is_private_and_fresh(tmp_path):
    first = cluster.new_token(tmp_path)
    assert first.stat().st_mode & 0o777 == 0o600
    value = first.read_text()
    assert len(value) == 64
    assert cluster.new_token(tmp_path).read_text() != value


# --- the cluster -----------------------------------------------------------------------------


class Cluster:
    """A stack with a Ray cluster of a head and two workers, up through the command line (as
    a user would), and what the test saw of it: every PID it started, the listening sockets."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.seen: dict[int, int] = {}  # pid: start time
        self.sockets: set[tuple[str, int, str]] = set()
        self.state: dict | None = None

    def __enter__(self) -> Cluster:
        t0 = time.monotonic()
        try:
            up = cli("up", "--dir", str(self.dir), "--ray-workers", "2")
            assert up.returncode == 0, up.stderr
        except BaseException:
            self.__exit__(RuntimeError, None, None)
            raise
        self.started_in = time.monotonic() - t0
        self.env = parse_exports(up.stdout)
        self.state = json.loads((self.dir / st.STATE_FILE).read_text())
        self.services = self.state["services"]
        self.head = self.services["ray-head"]
        self.token_file = Path(self.env["RAY_AUTH_TOKEN_PATH"])
        self.watch()
        return self

    def watch(self) -> None:
        self.seen.update(started_pids(self.state))
        self.sockets |= listening_sockets(sorted(self.seen))

    def submit(self, submission_id: str, command: str) -> None:
        """`ray job submit`, as KubeRay submits a RayJob's entrypoint."""
        submit = subprocess.run(
            [str(RAY), "job", "submit", "--address", self.head["url"], "--submission-id",
             submission_id, "--no-wait", "--", *shlex.split(command)],
            env={**os.environ, **self.env}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert submit.returncode == 0, submit.stdout + submit.stderr

    def job(self, submission_id: str) -> dict:
        return http_json(f"{self.head['url']}/api/jobs/{submission_id}", self.token_file)

    def wait(self, submission_id: str, timeout: float, until=None) -> dict:
        """Watch until the job ends (or `until()` is true); the job's info."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.watch()
            info = self.job(submission_id)
            if info["status"] in ("SUCCEEDED", "FAILED", "STOPPED") or (until and until()):
                return info
            time.sleep(1)
        raise AssertionError(f"job {submission_id} still {info['status']} after {timeout} s")

    def logs(self, submission_id: str) -> str:
        url = f"{self.head['url']}/api/jobs/{submission_id}/logs"
        return http_json(url, self.token_file)["logs"]

    def __exit__(self, failed, *exc) -> None:
        if self.state is not None:
            self.seen.update(started_pids(self.state))
        t0 = time.monotonic()
        # --purge: the node folders too (the short temp dirs under the system temp dir)
        down = cli("down", "--purge", "--dir", str(self.dir))
        if failed is not None:  # cleaned up; the test's own error is the one to see
            return
        assert down.returncode == 0, down.stderr
        if self.state is None:
            return
        assert "stopped" in down.stderr
        deadline = time.monotonic() + 15
        left = lambda: [p for p, t in self.seen.items() if running(p, t)]  # noqa: E731
        while time.monotonic() < deadline and left():
            time.sleep(0.2)
        assert not left(), f"processes the test started are left: {left()}"
        for svc in self.state["services"].values():
            if "temp_dir" in svc:
                assert not [p for p in cluster.node_processes(svc["temp_dir"]) if running(p)]
        assert not (self.dir / st.STATE_FILE).exists()
        assert not self.token_file.exists()
        temps = [
            Path(svc["temp_dir"]) for svc in self.state["services"].values() if "temp_dir" in svc
        ]
        assert not [t for t in temps if t.exists()]
        print(f"cluster up in {self.started_in:.1f} s, down in {time.monotonic() - t0:.1f} s")


def check_runs(tracking_uri: str, last_step: int, eval_every: int = 10) -> list:
    """Every trial of the smoke suite finished, one MLflow run each, none RUNNING, the parent
    FINISHED, and every evaluation step logged exactly once."""
    client, children, parents = runs(tracking_uri)
    assert sorted(r.info.run_name for r in children) == sorted(SMOKE_TRIALS)
    assert {r.info.status for r in children} == {"FINISHED"}
    assert [p.info.status for p in parents] == ["FINISHED"]
    every = list(range(eval_every, last_step + 1, eval_every))
    for run in children:
        for metric in ("step", "eval/exact_accuracy"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, metric)]
            assert sorted(steps) == every, (run.info.run_name, metric, steps)
    return children


@needs_proc
@pytest.mark.slow
def test_a_suite_submitted_through_the_jobs_api_runs_on_several_nodes(tmp_path):
    with Cluster(tmp_path / "stack") as c:
        env, head, services, token_file = c.env, c.head, c.services, c.token_file
        assert set(services) == {"s3", "mlflow", "ray-head", "ray-worker-1", "ray-worker-2"}
        assert env["RAY_ADDRESS"] == head["gcs_address"]
        assert env["RAY_API_SERVER_ADDRESS"] == head["url"]
        assert env["RAY_AUTH_MODE"] == "token"
        token = token_file.read_text().strip()
        assert token_file.stat().st_mode & 0o777 == 0o600
        status = cli("status", "--dir", str(c.dir))
        assert status.returncode == 0, status.stdout
        assert status.stdout.count("healthy") == 5, status.stdout

        # The three nodes as Ray sees them: the head without CPUs, each worker with one.
        nodes = http_json(f"{head['url']}/api/v0/nodes?limit=100&detail=1", token_file)
        alive = [n for n in nodes["data"]["result"]["result"] if n["state"] == "ALIVE"]
        by_name = {n["labels"][cluster.NODE_LABEL]: n for n in alive}
        assert set(by_name) == {"ray-head", "ray-worker-1", "ray-worker-2"}
        assert by_name["ray-head"]["is_head_node"]
        assert by_name["ray-head"]["resources_total"].get("CPU", 0) == 0
        assert by_name["ray-worker-1"]["resources_total"]["CPU"] == 1
        assert {n["node_ip"] for n in alive} == {"127.0.0.1"}
        # Without the token the Jobs API says no.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                f"{head['url']}/api/jobs/", timeout=10
            )
        assert refused.value.code in (401, 403)

        # The entrypoint is built where the manifests' is (tests/infra/test_entrypoint.py).
        t_submit = time.monotonic()
        c.submit("smoke-1", entrypoint("smoke", "smoke"))
        info = c.wait("smoke-1", timeout=300)
        suite_s = time.monotonic() - t_submit
        logs = c.logs("smoke-1")
        assert info["status"] == "SUCCEEDED", logs[-4000:]
        assert "| trm | 0 | FINISHED |" in logs and "(4 of 4 ended)" in logs, logs[-4000:]
        print(f"suite: submit to SUCCEEDED in {suite_s:.1f} s")

        children = check_runs(env["MLFLOW_TRACKING_URI"], last_step=20)
        _, _, parents = runs(env["MLFLOW_TRACKING_URI"])
        assert parents[0].data.tags["trm.command"].endswith("cluster=address")

        # The trials ran on the workers (the head has no CPUs), on both of them.
        where = pid_nodes(head["url"], token_file)
        trial_nodes = {
            run.info.run_name: where.get(int(run.data.tags["trm.worker"].rsplit(":", 1)[1]))
            for run in children
        }
        assert set(trial_nodes.values()) == {"ray-worker-1", "ray-worker-2"}, trial_nodes
        # The driver ran on the head, in the head's folder (its .trm: cache and report).
        assert list((Path(head["home"]) / ".trm" / "reports").iterdir())

        # Loopback only: every listening socket of every process of the stack.
        names = {name for _, _, name in c.sockets}
        assert {"gcs_server", "raylet"} <= names, names
        exposed = sorted(s for s in c.sockets if s[0] not in LOOPBACK)
        assert exposed == [], f"listening beyond loopback: {exposed}"

        # The token and the S3 secret are in no log and on no command line.
        secret = st.TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
        assert token not in logs and secret not in logs
        for pid in c.seen:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue  # ended since
            assert token.encode() not in cmdline and secret.encode() not in cmdline
        temps = [Path(s["temp_dir"]) for s in services.values() if "temp_dir" in s]
        for root in [c.dir, *temps]:
            for path in root.rglob("*"):
                if path.is_file() and not path.is_symlink() and path != token_file:
                    data = path.read_bytes()
                    assert token.encode() not in data, path
                    if path.suffix in (".log", ".out", ".err", ".txt", ".json"):
                        assert secret.encode() not in data, path


def trainables(temp_dir: str) -> list[int]:
    """PIDs of the Tune trial actors running on a node (Ray names them `ray::<Trainable>...`)."""
    found = []
    for pid in cluster.node_processes(temp_dir):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"ray::") and b"Trainable" in cmdline:
            found.append(pid)
    return found


@needs_proc
@pytest.mark.slow
def test_a_worker_node_that_dies_mid_suite_loses_no_trial(tmp_path):
    """Worker 2 is ended (SIGKILL to each of its processes, by PID) while it trains a trial
    that has checkpointed to S3: that trial is retried on worker 1 from its last checkpoint,
    and the suite finishes with every trial once, each evaluation logged once."""
    steps = 80
    command = entrypoint(
        "smoke", "smoke", f"scale.steps={steps}", "scale.eval_every=10", "scale.max_failures=3"
    )
    with Cluster(tmp_path / "stack") as c:
        from tests.orchestration.test_ablate import boto3_client

        s3 = boto3_client(c.env)
        victim = c.services["ray-worker-2"]

        def victim_trial_checkpointed() -> bool:
            """A trial training on worker 2 has a checkpoint on S3 and steps still to go."""
            from mlflow import MlflowClient

            pids = {str(p) for p in trainables(victim["temp_dir"])}
            if not pids:
                return False
            client = MlflowClient(c.env["MLFLOW_TRACKING_URI"])
            experiment = client.get_experiment_by_name("trm-lab/smoke")
            if experiment is None:
                return False
            for run in client.search_runs(
                [experiment.experiment_id], "attributes.status = 'RUNNING'"
            ):
                tags = run.data.tags
                if tags.get("trm.worker", ":").rsplit(":", 1)[1] not in pids:
                    continue
                if not 10 <= run.data.metrics.get("step", 0) < steps:
                    continue
                folder = tags["trm.checkpoint_dir"].removeprefix("s3://trm/")
                listed = s3.list_objects_v2(Bucket="trm", Prefix=f"{folder}/checkpoint_")
                if listed.get("KeyCount", 0):
                    return True
            return False

        c.submit("smoke-node-loss", command)
        # The node dies (all of its processes at once, no goodbye) while one of its trials has
        # a checkpoint and steps to go: frozen first (SIGSTOP), checked again, then killed.
        for _ in range(20):
            info = c.wait("smoke-node-loss", timeout=300, until=victim_trial_checkpointed)
            assert info["status"] == "RUNNING", c.logs("smoke-node-loss")[-4000:]
            doomed = [p for p in cluster.node_processes(victim["temp_dir"]) if running(p)]
            for pid in doomed:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
            if victim_trial_checkpointed():
                break
            for pid in doomed:  # its trial ended meanwhile: let it go on, try again
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        else:
            raise AssertionError("worker 2 never held a checkpointed trial with steps to go")
        killed_trials = trainables(victim["temp_dir"])
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        t_kill = time.monotonic()
        info = c.wait("smoke-node-loss", timeout=400)
        logs = c.logs("smoke-node-loss")
        assert info["status"] == "SUCCEEDED", logs[-4000:]
        print(f"killed worker 2 ({len(doomed)} processes, trial pids {killed_trials}); "
              f"suite ended {time.monotonic() - t_kill:.1f} s later")  # fmt: skip

        children = check_runs(c.env["MLFLOW_TRACKING_URI"], last_step=steps)
        where = pid_nodes(c.head["url"], c.token_file)
        resumed = {
            r.info.run_name: r.data.tags.get("trm.resumed_from_steps")
            for r in children
            if r.data.tags.get("trm.resumed_from_steps")
        }
        assert resumed, "no trial was retried after its node died"
        for name, from_steps in resumed.items():
            assert int(from_steps.split(",")[-1]) >= 10, (name, from_steps)  # from a checkpoint
        for run in children:  # each trial's last attempt ran on the surviving worker, or ended
            node = where.get(int(run.data.tags["trm.worker"].rsplit(":", 1)[1]))
            if run.info.run_name in resumed:
                assert node == "ray-worker-1", (run.info.run_name, node)
        print(f"trials expected 4, finished {len(children)}, resumed {resumed}")


def drivers(temp_dir: str) -> list[int]:
    """PIDs of the suite drivers a node runs (a Jobs-API job's entrypoint, under its
    supervisor actor)."""
    found = []
    for pid in cluster.node_processes(temp_dir):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"orchestration.ablate" in cmdline and running(pid):
            found.append(pid)
    return found


@needs_proc
@pytest.mark.slow
def test_a_killed_driver_and_a_restarted_head_are_survived_by_submitting_again(tmp_path):
    """(b) The job's driver is killed (SIGKILL, by PID) once a trial has checkpointed: the job
    fails, and the same entrypoint submitted again resumes the suite. (c) While that second job
    runs, the whole Ray cluster restarts (`stack restart-ray`: every node's processes ended by
    PID, then started again; S3 and MLflow kept), which forgets the job: submitted a third
    time, the suite resumes again and finishes, every trial once, each evaluation logged once,
    none RUNNING (what KubeRay's RayJob retries do on a fresh cluster)."""
    steps = 120  # enough that the second job is still running when it is seen resumed
    command = entrypoint(
        "smoke", "smoke", f"scale.steps={steps}", "scale.eval_every=20", "scale.max_failures=3"
    )
    with Cluster(tmp_path / "stack") as c:
        from tests.orchestration.test_ablate import boto3_client

        s3 = boto3_client(c.env)

        def checkpoints() -> int:
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket="trm")
            keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
            return sum(k.endswith("/state.pt") and "/checkpoint_" in k for k in keys)

        # (b) the driver dies
        c.submit("smoke-driver-1", command)
        info = c.wait("smoke-driver-1", timeout=300, until=lambda: checkpoints() >= 1)
        assert info["status"] == "RUNNING", c.logs("smoke-driver-1")[-4000:]
        (driver,) = drivers(c.head["temp_dir"])
        os.kill(driver, signal.SIGKILL)
        t_kill = time.monotonic()
        assert c.wait("smoke-driver-1", timeout=120)["status"] == "FAILED"
        c.submit("smoke-driver-2", command)
        # the dead driver's trial actors may still write a checkpoint while Ray ends them:
        # count from when the second job's suite has resumed
        since: list[int] = []

        def resumed_and_checkpointed() -> bool:
            if not since:
                if "resuming" in c.logs("smoke-driver-2"):
                    since.append(checkpoints())
                return False
            return checkpoints() > since[0]

        info = c.wait("smoke-driver-2", timeout=300, until=resumed_and_checkpointed)
        assert info["status"] == "RUNNING", c.logs("smoke-driver-2")[-4000:]
        print(f"driver killed: the resubmitted suite checkpointed again "
              f"{time.monotonic() - t_kill:.1f} s later")  # fmt: skip

        # (c) the head (and with it the cluster) restarts while the second job runs
        c.watch()
        restart = cli("restart-ray", "--dir", str(c.dir))
        assert restart.returncode == 0, restart.stderr
        c.state = json.loads((c.dir / st.STATE_FILE).read_text())
        c.services, c.head = c.state["services"], c.state["services"]["ray-head"]
        c.watch()
        with pytest.raises(urllib.error.HTTPError):  # the new head knows no earlier job
            c.job("smoke-driver-2")
        c.submit("smoke-driver-3", command)
        info = c.wait("smoke-driver-3", timeout=400)
        logs = c.logs("smoke-driver-3")
        assert info["status"] == "SUCCEEDED", logs[-4000:]
        assert "resuming" in logs, logs[:6000]  # trials finished before are not run again

        children = check_runs(c.env["MLFLOW_TRACKING_URI"], last_step=steps, eval_every=20)
        resumed = {
            r.info.run_name: r.data.tags["trm.resumed_from_steps"]
            for r in children
            if "trm.resumed_from_steps" in r.data.tags
        }
        assert resumed, "no trial continued from a checkpoint"
        print(f"trials expected 4, finished {len(children)}, lost 0, duplicated 0 "
              f"(one run each, every step once); resumed from steps {resumed}")  # fmt: skip
