"""The local stack: a real S3 server (moto in server mode) and an MLflow tracking server on
127.0.0.1, started by one command; the integration tests use the same code.

    python -m orchestration.stack up [--dir .trm/stack] [--s3-port 0] [--mlflow-port 0]
                                     [--bucket trm] [--ray-workers N [--ray-worker-cpus 1]]
    eval "$(python -m orchestration.stack env)"     # point boto3, pyarrow, MLflow, datasets at it
    python -m orchestration.stack status
    python -m orchestration.stack restart-ray        # the Ray nodes only, S3 and MLflow kept
    python -m orchestration.stack down [--purge]

`up` starts both servers as detached processes (they outlive the command), creates the bucket,
waits until both answer (S3: a ListBuckets call; MLflow: GET /health), records pids, ports,
URLs and log paths in `<dir>/stack.json`, and prints the `export` lines of `env` on stdout (a
summary goes to stderr), so `eval "$(python -m orchestration.stack up)"` also works. `up` on a
stack that already runs and answers only prints the settings. Port 0 picks a free port. MLflow
keeps runs in `<dir>/mlflow.db` and proxies artifacts to `s3://<bucket>/mlflow`; datasets go to
`s3://<bucket>/datasets` (TRM_DATASET_STORE), Ray results to `s3://<bucket>/ray_results`
(TRM_RESULTS_URI). Logs: `<dir>/s3.log`, `<dir>/mlflow.log`.

`--ray-workers N` (N >= 1) adds a Ray cluster of N + 1 nodes on this machine
(orchestration.cluster): a head (`ray start --head`, no CPUs for trials: it runs job drivers,
the GCS and the dashboard with its Jobs API on 127.0.0.1) and N workers
(`ray start --address`, `--ray-worker-cpus` CPUs each), every node with its own temp dir under
`<dir>/ray/<node>/` and the services' variables in its environment from `ray start` on. `env`
then also prints RAY_ADDRESS, RAY_API_SERVER_ADDRESS (for `ray job submit`) and the token-auth
variables. Logs: `<dir>/ray-head.log`, `<dir>/ray-worker-<k>.log`, Ray's under each temp dir.

Python API:

    with local_stack(tmp_path) as stack:        # both servers, always stopped on exit
        os.environ.update(stack.env())
    with s3_only() as s3:                       # S3 only: s3.endpoint, s3.bucket, s3.env()
        ...

Things to know:
- Nothing binds anything but 127.0.0.1.
- S3 contents live in moto's memory and vanish on `down`, while the tracking database stays:
  runs from an earlier `up` keep their params and metrics but lose their artifacts.
  `down --purge` also deletes the database and the logs.
- Credentials are fixed throwaway values that only mean something to the loopback moto
  server (it accepts any). Real ones in the environment are never read nor printed, and no
  `AWS_*` variable of the caller reaches the servers.
- Each server runs under a small guard process, leader of its own process group; stopping
  signals the whole group (SIGTERM, then SIGKILL after a grace period), so worker processes
  (mlflow runs uvicorn as a child) go too. If the owner of an attached stack (the Python API)
  dies, even by SIGKILL, the guards see their lifeline pipe close and stop their groups;
  atexit covers ordinary exits. We chose this over prctl(PR_SET_PDEATHSIG): that is Linux
  only, fires when the parent *thread* ends rather than the process, and reaches only the
  direct child, not the server's own workers. (A child the owner forks without exec keeps
  the pipe open, so the servers then stop when that child ends too.)
- A Ray node is stopped by PID: its guard's group, the group `ray start --block` makes for
  itself, and every process whose command line names the node's temp dir, with descendants.
  Never `ray stop`, which would end every Ray of the user.
- POSIX only (process groups, fcntl locks); memory figures in `status` need /proc (Linux).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from orchestration import cluster

HOST = "127.0.0.1"
DEFAULT_DIR = Path(".trm") / "stack"
DEFAULT_BUCKET = "trm"
STATE_FILE = "stack.json"
REGION = "us-east-1"
# Throwaway values for the loopback test server only (moto accepts anything); never real
# credentials, and the same on every machine.
TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "trm-lab-test",
    "AWS_SECRET_ACCESS_KEY": "trm-lab-test-secret",
}
LABELS = {"s3": "S3 server (moto)", "mlflow": "MLflow server", cluster.HEAD: "Ray head"}
# Measured on 2 cores: moto answers in about 1 s, mlflow in about 5 s (18 s without the job
# runner switched off); the margins absorb a loaded machine.
START_TIMEOUT = {"s3": 30.0, "mlflow": 90.0, cluster.HEAD: cluster.HEAD_TIMEOUT_S}
STOP_GRACE = 10.0

# Runs a server in its own process group and stops the group when told to (SIGTERM), when the
# server exits, or when its owner's lifeline pipe closes (the owner died). Stdlib only and run
# with `python -I`, so it needs nothing from this project and starts in tens of milliseconds.
_GUARD_MARK = b"[stack guard]"
_GUARD = r"""
# [stack guard]
import os, signal, subprocess, sys, threading, time
lifeline, grace, cmd = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
stop, why = threading.Event(), []
def request(reason):
    why.append(reason); stop.set()
signal.signal(signal.SIGTERM, lambda *_: request("SIGTERM"))
child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
def watch_child():
    child.wait(); request(f"the server exited with code {child.returncode}")
def watch_lifeline():
    try:
        while os.read(lifeline, 64):
            pass
    except OSError:
        pass
    request("its owner went away")
def child_group():
    # A child that made itself a group leader (`ray start --block` does, for its reaper)
    # takes its own processes out of ours: that group is signalled too.
    try:
        return child.pid if os.getpgid(child.pid) == child.pid else None
    except OSError:
        return None
def signal_child_group(group, sig):
    if group is not None:
        try:
            os.killpg(group, sig)
        except OSError:
            pass
threading.Thread(target=watch_child, daemon=True).start()
if lifeline >= 0:
    threading.Thread(target=watch_lifeline, daemon=True).start()
group = None
while not stop.wait(0.2):
    group = child_group() or group
print(f"[stack guard] stopping: {why[0]}", file=sys.stderr, flush=True)
group = child_group() or group
if child.poll() is None:
    os.killpg(0, signal.SIGTERM)  # the whole group; our own handler just records it
    signal_child_group(group, signal.SIGTERM)
    try:
        child.wait(grace)
    except subprocess.TimeoutExpired:
        print("[stack guard] no exit after SIGTERM: SIGKILL", file=sys.stderr, flush=True)
sys.stderr.flush()
signal_child_group(group, signal.SIGKILL)
os.killpg(0, signal.SIGKILL)  # leftovers (a server's workers) and the guard itself
"""


class StackError(RuntimeError):
    """A service could not start, or the stack is not in the state a command needs."""


def _label(name: str) -> str:
    if name.startswith("ray-worker-"):
        return f"Ray worker {name.rsplit('-', 1)[1]}"
    return LABELS[name]


def _is_ray(name: str) -> bool:
    return name.startswith("ray-")


# --- process helpers -------------------------------------------------------------------------


def _group_members(pgid: int) -> list[int] | None:
    """Live (non-zombie) pids in a process group; None where /proc is not available."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    members = []
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited while we looked
        state, group = fields[0], int(fields[2])
        if group == pgid and state not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


def _is_guard(pid: int) -> bool:
    """False only where /proc shows that `pid` runs something else (a reused pid)."""
    try:
        return _GUARD_MARK in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self/cmdline").exists()  # gone, or no /proc at all
    except OSError:
        return True


def _group_alive(pgid: int) -> bool:
    """Whether the group a guard leads (pid == pgid) still has live processes.

    A stale state file may name a pid that now belongs to someone else: that is not ours.
    With the leader gone, the group id cannot have been reused while members remain.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # another user's processes: never ours
    members = _group_members(pgid)
    if members is None:
        return True  # no /proc: trust killpg
    if pgid in members and not _is_guard(pgid):
        return False
    # Zombies still count for killpg; /proc tells them apart.
    return bool(members)


def _rss_mib(pgid: int) -> float | None:
    return _rss_of(_group_members(pgid))


def _rss_of(members: list[int] | None) -> float | None:
    if members is None or not Path("/proc/self/status").exists():
        return None
    total = 0
    for pid in members:
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _stop_group(pgid: int, proc: subprocess.Popen | None, timeout: float) -> None:
    """SIGTERM the group, wait, then SIGKILL; reaps the guard when it is our own child."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        _signal_group(pgid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc is not None:
                proc.poll()  # reap, or the guard lingers as a zombie of ours
            if not _group_alive(pgid):
                return
            time.sleep(0.05)
    if _group_alive(pgid):
        raise StackError(f"process group {pgid} survived SIGKILL")


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((HOST, port)) == 0


def _check_port_free(service: str, port: int) -> None:
    # SO_REUSEADDR as the servers use it: TIME_WAIT left by an earlier run is no obstacle.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError as e:
            raise StackError(
                f"{_label(service)} cannot listen on {HOST}:{port}: {e.strerror}. "
                "Another process holds it: stop that, or pass another port (0 picks a free one)."
            ) from None


def _free_ports(count: int, taken: set[int]) -> list[int]:
    # Hold every socket until all are chosen, so the ports differ from each other.
    socks, ports = [], []
    try:
        while len(ports) < count:
            s = socket.socket()
            socks.append(s)
            s.bind((HOST, 0))
            port = s.getsockname()[1]
            if port not in taken:
                ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


def _log_tail(path: Path, offset: int = 0, lines: int = 25) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:]) or "    (empty)"


def _no_proxy_opener() -> urllib.request.OpenerDirector:
    # Loopback traffic must never go through an HTTP proxy from the environment.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _s3_client(endpoint: str, read_timeout: float = 10):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=Config(
            connect_timeout=2,
            read_timeout=read_timeout,
            retries={"max_attempts": 1},
            proxies={"http": "", "https": ""},
        ),
    )


def _create_bucket(endpoint: str, bucket: str) -> None:
    from botocore.exceptions import ClientError

    try:
        _s3_client(endpoint).create_bucket(Bucket=bucket)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") not in (
            "BucketAlreadyOwnedByYou",
            "BucketAlreadyExists",
        ):
            raise


def _s3_healthy(endpoint: str, client=None) -> bool:
    try:
        (client or _s3_client(endpoint, read_timeout=2)).list_buckets()
        return True
    except Exception:
        return False


def _mlflow_healthy(url: str) -> bool:
    try:
        with _no_proxy_opener().open(f"{url}/health", timeout=3) as response:
            return response.status == 200 and response.read().strip() == b"OK"
    except Exception:
        return False


def _client_env(s3_endpoint: str, bucket: str, tracking_uri: str | None) -> dict[str, str]:
    env = {
        "AWS_ENDPOINT_URL_S3": s3_endpoint,
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
        "AWS_DEFAULT_REGION": REGION,
        **TEST_CREDENTIALS,
        "TRM_DATASET_STORE": f"s3://{bucket}/datasets",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


def _results_env(bucket: str) -> dict[str, str]:
    """Where `storage=s3` keeps Ray Tune's state (the other half of that group's settings)."""
    return {"TRM_RESULTS_URI": f"s3://{bucket}/ray_results"}


def _server_env(s3_endpoint: str, extra: dict[str, str]) -> dict[str, str]:
    # The caller's AWS settings (real credentials, profiles, endpoints, CA bundles) stay out.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    no_proxy = ",".join(p for p in (env.get("NO_PROXY") or env.get("no_proxy"), HOST) if p)
    env.update(
        TEST_CREDENTIALS,
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_ENDPOINT_URL_S3=s3_endpoint,
        MLFLOW_S3_ENDPOINT_URL=s3_endpoint,
        MLFLOW_DISABLE_TELEMETRY="true",
        NO_PROXY=no_proxy,
        no_proxy=no_proxy,
        PYTHONUNBUFFERED="1",  # log lines reach the log file as they happen
    )
    env.update(extra)
    return env


# --- the stack -------------------------------------------------------------------------------


class LocalStack:
    """Both servers under one directory. `detached=True` (the CLI) leaves them running after
    this process exits; otherwise (the default, for tests) they stop when it exits, crashes
    or is killed. `with_mlflow=False` runs S3 alone, still as a separate process.
    `ray_workers=N` (N >= 1, with MLflow) adds a Ray cluster: a head and N worker nodes of
    `ray_worker_cpus` CPUs each (orchestration.cluster)."""

    def __init__(
        self,
        directory: str | os.PathLike = DEFAULT_DIR,
        *,
        s3_port: int = 0,
        mlflow_port: int = 0,
        bucket: str = DEFAULT_BUCKET,
        with_mlflow: bool = True,
        detached: bool = False,
        stop_grace: float = STOP_GRACE,
        ray_workers: int = 0,
        ray_worker_cpus: int = 1,
    ):
        if s3_port and s3_port == mlflow_port:
            raise StackError(f"the S3 and MLflow servers need different ports (both {s3_port})")
        try:
            cluster.check_sizes(ray_workers, ray_worker_cpus)
        except cluster.ClusterError as err:
            raise StackError(str(err)) from None
        if ray_workers and not with_mlflow:
            raise StackError("a Ray cluster needs the MLflow server too (its trials log there)")
        self.ray_workers, self.ray_worker_cpus = ray_workers, ray_worker_cpus
        # Absolute, so the sqlite URI and the state file do not depend on a later cwd.
        self.dir = Path(directory).resolve()
        self.s3_port, self.mlflow_port, self.bucket = s3_port, mlflow_port, bucket
        self.with_mlflow, self.detached, self.stop_grace = with_mlflow, detached, stop_grace
        self.state: dict | None = None
        self.started = False  # whether the last up() started servers (False: already running)
        self._procs: dict[str, subprocess.Popen] = {}
        self._lifeline: int | None = None  # write end; the guards read the other end

    # paths and settings

    @property
    def state_path(self) -> Path:
        return self.dir / STATE_FILE

    @property
    def s3_endpoint(self) -> str:
        return self._require_state()["services"]["s3"]["url"]

    @property
    def tracking_uri(self) -> str | None:
        mlflow = self._require_state()["services"].get("mlflow")
        return mlflow["url"] if mlflow else None

    @property
    def ray_address(self) -> str | None:
        """The cluster's GCS address (host:port) when the stack has a Ray cluster."""
        head = self._require_state()["services"].get(cluster.HEAD)
        return head["gcs_address"] if head else None

    @property
    def dashboard_url(self) -> str | None:
        """The head's dashboard and Jobs API (`ray job submit --address ...`)."""
        head = self._require_state()["services"].get(cluster.HEAD)
        return head["url"] if head else None

    def ray_nodes(self) -> dict[str, str]:
        """{node name: its Ray temp dir} of the cluster's nodes (empty without a cluster)."""
        services = self._require_state()["services"]
        return {name: svc["temp_dir"] for name, svc in services.items() if _is_ray(name)}

    def env(self) -> dict[str, str]:
        """The variables that point clients (boto3, pyarrow, MLflow, DatasetStore, and with a
        cluster Ray's CLI and `cluster=address`) at the stack."""
        state = self._require_state()
        env = _client_env(self.s3_endpoint, state["bucket"], self.tracking_uri)
        env.update(_results_env(state["bucket"]))
        if cluster.HEAD in state["services"]:
            env.update(cluster.client_env(state, self.dir))
        return env

    def _require_state(self) -> dict:
        if self.state is None:
            self.state = self.read_state()
        if self.state is None:
            raise StackError(
                f"the local stack is not running in {self.dir}; "
                "start it with `python -m orchestration.stack up`"
            )
        return self.state

    def read_state(self) -> dict | None:
        try:
            return json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return None

    def _write_state(self, state: dict) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, self.state_path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Two `up`s (or an `up` and a `down`) on one directory must not interleave.
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # health

    def service_status(self, state: dict | None = None) -> dict[str, dict]:
        """Per service: pid, url, log, running, healthy, rss_mib (None without /proc)."""
        state = state or self.read_state()
        report = {}
        services = (state or {}).get("services", {})
        nodes = None  # the cluster's alive nodes, asked once
        if cluster.HEAD in services and _group_alive(services[cluster.HEAD]["pid"]):
            nodes = cluster.alive_nodes(services[cluster.HEAD]["url"], self.dir)
        labels = {n.get("labels", {}).get(cluster.NODE_LABEL) for n in nodes or []}
        for name, svc in services.items():
            running = _group_alive(svc["pid"])
            if not running:
                healthy = False
            elif name == "s3":
                healthy = _s3_healthy(svc["url"])
            elif name == "mlflow":
                healthy = _mlflow_healthy(svc["url"])
            else:  # a Ray node: registered alive with the head
                healthy = name in labels
            if not running:
                rss = None
            elif _is_ray(name):
                rss = _rss_of(cluster.node_processes(svc["temp_dir"]))
            else:
                rss = _rss_mib(svc["pid"])
            report[name] = {**svc, "running": running, "healthy": healthy, "rss_mib": rss}
        return report

    def healthy(self, state: dict | None = None) -> bool:
        report = self.service_status(state)
        return bool(report) and all(s["healthy"] for s in report.values())

    # start and stop

    def up(self) -> dict[str, str]:
        """Start both servers unless they already run and answer; returns `env()`."""
        with self._locked():
            state = self.read_state()
            wanted = {"s3", "mlflow"} if self.with_mlflow else {"s3"}
            if state is not None and wanted <= set(state["services"]) and self.healthy(state):
                if self.ray_workers and cluster.HEAD not in state["services"]:
                    raise StackError(
                        f"the stack in {self.dir} runs without a Ray cluster; run `down` first "
                        "to start it with one (S3 contents live in moto's memory and go with it)"
                    )
                self.state, self.started = state, False
                self._warn_if_different(state)
                return self.env()
            if state is not None:
                # Half up, or dead with a stale state file: clear it and start afresh.
                self._stop_services(state)
                self.state_path.unlink(missing_ok=True)
            self.state = self._start()
            self.started = True
            if not self.detached:
                atexit.register(self.down)
            return self.env()

    def down(self, timeout: float | None = None) -> bool:
        """Stop whatever runs in this directory; True if anything did. Safe when nothing runs."""
        with self._locked():
            state = self.read_state() or self.state
            stopped = False
            if state is not None:
                stopped = self._stop_services(state, timeout)
            self.state_path.unlink(missing_ok=True)
            cluster.token_path(self.dir).unlink(missing_ok=True)  # meaningless without a cluster
            self.state = None
            self._close_lifeline()
            atexit.unregister(self.down)
            return stopped

    def _stop_services(self, state: dict, timeout: float | None = None) -> bool:
        stopped = False
        services = state.get("services", {})
        grace = self.stop_grace if timeout is None else timeout
        # Ray's workers, then its head (a job's driver), then MLflow (it may still be writing
        # artifacts to S3), then S3.
        workers = sorted((n for n in services if n.startswith("ray-worker-")), reverse=True)
        for name in [*workers, cluster.HEAD, "mlflow", "s3"]:
            svc = services.get(name)
            if svc is None:
                continue
            proc = self._procs.pop(name, None)
            # A Ray node by PID, collected before any signal: its processes are outside the
            # guard's group (`ray start --block` leads a group of its own).
            if _is_ray(name) and cluster.end_node(svc["temp_dir"], svc["pid"], grace):
                stopped = True
            if _group_alive(svc["pid"]):
                _stop_group(svc["pid"], proc, grace)
                stopped = True
            elif proc is not None:
                proc.poll()
        return stopped

    def _close_lifeline(self) -> None:
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None

    def _warn_if_different(self, state: dict) -> None:
        wanted = {"bucket": self.bucket}
        if self.s3_port:
            wanted["s3 port"] = self.s3_port
        if self.mlflow_port:
            wanted["mlflow port"] = self.mlflow_port
        services = state["services"]
        have = {
            "bucket": state["bucket"],
            "s3 port": services["s3"]["port"],
            "mlflow port": services.get("mlflow", {}).get("port"),
        }
        if self.ray_workers:
            wanted["ray workers"] = self.ray_workers
        have["ray workers"] = sum(n.startswith("ray-worker-") for n in services)
        diff = [f"{k} {have[k]} (asked {v})" for k, v in wanted.items() if have[k] != v]
        if diff:
            print(
                f"stack: already running in {self.dir} with {', '.join(diff)}; "
                "run `down` first to change them",
                file=sys.stderr,
            )

    def _start(self) -> dict:
        names = ["s3", "mlflow"] if self.with_mlflow else ["s3"]
        wanted = {"s3": self.s3_port, "mlflow": self.mlflow_port}
        explicit = {wanted[n] for n in names if wanted[n]}
        workers = [cluster.worker_name(k) for k in range(1, self.ray_workers + 1)]
        nodes = [cluster.HEAD, *workers] if workers else []
        # a head needs its GCS, dashboard and client ports; every node its agent's
        ray_count = 3 + len(nodes) if nodes else 0
        free = iter(_free_ports(sum(1 for n in names if not wanted[n]) + ray_count, explicit))
        ports = {n: wanted[n] or next(free) for n in names}
        head_ports = {key: next(free) for key in ("gcs", "dashboard", "client") if nodes}
        agent_ports = {n: next(free) for n in nodes}
        for name in names:  # fail before starting anything
            _check_port_free(name, ports[name])
        for name, port in [*((cluster.HEAD, p) for p in head_ports.values()), *agent_ports.items()]:
            _check_port_free(name, port)

        s3_url = f"http://{HOST}:{ports['s3']}"
        commands = {
            "s3": [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(ports["s3"])],
            "mlflow": [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                HOST,
                "--port",
                str(ports.get("mlflow", 0)),
                "-w",
                "1",
                "--backend-store-uri",
                f"sqlite:///{self.dir / 'mlflow.db'}",
                "--artifacts-destination",
                f"s3://{self.bucket}/mlflow",
            ],
        }
        extra_env = {
            "s3": {"MOTO_PORT": str(ports["s3"])},
            # Without the job runner: 486 MB and 5 s to start instead of 3.1 GB and 18 s.
            "mlflow": {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        }

        if not self.detached and self._lifeline is None:
            read_end, self._lifeline = os.pipe()
        else:
            read_end = None
        services, offsets = {}, {}
        if nodes:
            node_env = self._node_env(s3_url, self.bucket, f"http://{HOST}:{ports['mlflow']}")
            gcs_address = f"{HOST}:{head_ports['gcs']}"

        def start_node(name: str) -> None:
            temp_dir = cluster.node_temp_dir(self.dir, name)
            head = name == cluster.HEAD
            command = cluster.node_command(
                name,
                temp_dir,
                head_ports=head_ports if head else None,
                address=None if head else gcs_address,
                agent_port=agent_ports[name],
                num_cpus=0 if head else self.ray_worker_cpus,
            )
            home = cluster.node_home(self.dir, name)
            log = self.dir / f"{name}.log"
            proc, offsets[name] = self._spawn(command, node_env, log, read_end, cwd=home)
            self._procs[name] = proc
            services[name] = {
                "pid": proc.pid,  # the guard; `ray start --block` leads a group of its own
                "port": head_ports["dashboard"] if head else agent_ports[name],
                "url": f"http://{HOST}:{head_ports['dashboard']}" if head else gcs_address,
                "log": str(log),
                "command": shlex.join(command),
                "temp_dir": str(temp_dir),
                "home": str(home),
                **({"gcs_address": gcs_address} if head else {"cpus": self.ray_worker_cpus}),
            }

        try:
            # Both start at once (mlflow needs S3 only when artifacts arrive): saves a second.
            for name in names:
                log = self.dir / f"{name}.log"
                proc, offsets[name] = self._spawn(
                    commands[name], _server_env(s3_url, extra_env[name]), log, read_end
                )
                self._procs[name] = proc
                services[name] = {
                    "pid": proc.pid,  # the guard: leader of the server's process group
                    "port": ports[name],
                    "url": f"http://{HOST}:{ports[name]}",
                    "log": str(log),
                    "command": shlex.join(commands[name]),
                }
            if nodes:  # the head starts beside the servers (its nodes' variables are known)
                cluster.new_token(self.dir)
                start_node(cluster.HEAD)
            state = {
                "bucket": self.bucket,
                "directory": str(self.dir),
                "owner_pid": None if self.detached else os.getpid(),
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "services": services,
            }
            # Written before waiting, so a `down` from elsewhere can stop a start that hangs.
            self._write_state(state)
            # A short read timeout: moto answers in milliseconds, a stranger on the port may never.
            client = _s3_client(s3_url, read_timeout=2)
            self._wait("s3", services["s3"], offsets["s3"], lambda: _s3_healthy(s3_url, client))
            _create_bucket(s3_url, self.bucket)
            if self.with_mlflow:
                url = services["mlflow"]["url"]
                self._wait(
                    "mlflow", services["mlflow"], offsets["mlflow"], lambda: _mlflow_healthy(url)
                )
            if nodes:
                self._join_workers(state, offsets, workers, start_node)
            return state
        except BaseException:
            self._stop_services({"services": services}, timeout=3.0)
            self.state_path.unlink(missing_ok=True)
            self._close_lifeline()
            raise
        finally:
            if read_end is not None:
                os.close(read_end)

    def _node_env(self, s3_url: str, bucket: str, mlflow_url: str) -> dict[str, str]:
        """A Ray node's environment: the services' variables from `ray start` on."""
        services_env = {**_client_env(s3_url, bucket, mlflow_url), **_results_env(bucket)}
        return cluster.node_env(_server_env(s3_url, {}), services_env, self.dir)

    def restart_ray(self, timeout: float | None = None) -> dict:
        """Stop the Ray cluster's nodes (workers, then the head: its job drivers with it) by
        PID and start them again with the same commands, ports and token, keeping S3 and
        MLflow and what they hold: what a restarted head pod looks like to a suite (its
        cluster gone, its jobs forgotten, the results store intact). Returns the new state."""
        with self._locked():
            state = self._require_state()
            services = state["services"]
            if cluster.HEAD not in services:
                raise StackError(
                    f"the stack in {self.dir} has no Ray cluster; start one with "
                    "`up --ray-workers N`"
                )
            workers = sorted(n for n in services if n.startswith("ray-worker-"))
            self._stop_services({"services": {n: services[n] for n in (*workers, cluster.HEAD)}},
                                timeout)  # fmt: skip
            env = self._node_env(services["s3"]["url"], state["bucket"], services["mlflow"]["url"])
            offsets = {}

            def start(name: str) -> None:
                svc = services[name]
                command = shlex.split(svc["command"])
                proc, offsets[name] = self._spawn(
                    command, env, Path(svc["log"]), None, cwd=Path(svc["home"])
                )
                self._procs[name] = proc
                svc["pid"] = proc.pid

            start(cluster.HEAD)
            self._write_state(state)
            self._join_workers(state, offsets, workers, start)
            self.state = state
            return state

    def _join_workers(self, state: dict, offsets: dict, workers: list[str], start) -> None:
        """With the head started: wait until it answers, start the workers (all at once; each
        registers with the head), record them, and wait until each has joined."""
        services = state["services"]
        dashboard = services[cluster.HEAD]["url"]
        self._wait(
            cluster.HEAD,
            services[cluster.HEAD],
            offsets[cluster.HEAD],
            lambda: cluster.head_healthy(dashboard, self.dir),
            every=0.5,
        )
        for name in workers:
            start(name)
        self._write_state(state)

        def joined(name: str):
            def check() -> bool:
                alive = cluster.alive_nodes(dashboard, self.dir) or []
                return name in {n.get("labels", {}).get(cluster.NODE_LABEL) for n in alive}

            return check

        for name in workers:
            self._wait(name, services[name], offsets[name], joined(name), every=0.5)

    def _spawn(
        self,
        command: list[str],
        env: dict[str, str],
        log: Path,
        lifeline: int | None,
        cwd: Path | None = None,
    ) -> tuple[subprocess.Popen, int]:
        with open(log, "ab") as out:
            offset = out.tell()
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            out.write(f"\n=== {stamp} starting: {shlex.join(command)}\n".encode())
            out.flush()
            guard = [sys.executable, "-I", "-c", _GUARD]
            guard += [str(-1 if lifeline is None else lifeline), str(self.stop_grace), *command]
            proc = subprocess.Popen(
                guard,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd or self.dir,  # anything a server writes next to itself lands here
                start_new_session=True,  # its own process group, away from terminal signals
                pass_fds=() if lifeline is None else (lifeline,),
            )
        return proc, offset

    def _wait(self, name: str, svc: dict, log_offset: int, check, every: float = 0.1) -> None:
        label, port, log = _label(name), svc["port"], Path(svc["log"])
        proc = self._procs[name]
        timeout = START_TIMEOUT.get(name, cluster.WORKERS_TIMEOUT_S)
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                problem = "exited during start-up"
                break
            if check():
                return
            if time.monotonic() > deadline:
                problem = f"did not answer within {timeout:.0f} s"
                break
            time.sleep(every)
        raise StackError(
            f"{label} failed to start on {HOST}:{port}: it {problem}.\n"
            f"Last lines of {log}:\n{_log_tail(log, log_offset)}"
        )


@contextlib.contextmanager
def local_stack(directory: str | os.PathLike, **options) -> Iterator[LocalStack]:
    """Start both servers (attached to this process) and always stop them on exit."""
    stack = LocalStack(directory, **options)
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


@dataclass(frozen=True)
class LocalS3:
    endpoint: str
    bucket: str

    def env(self) -> dict[str, str]:
        return _client_env(self.endpoint, self.bucket, None)

    def client(self):
        return _s3_client(self.endpoint)


@contextlib.contextmanager
def s3_only(bucket: str = DEFAULT_BUCKET) -> Iterator[LocalS3]:
    """An S3 server on 127.0.0.1 and a free port, with `bucket` created; stopped on exit.

    It runs in a thread of this process (moto's ThreadedMotoServer), not as a subprocess: it
    is ready in about 0.3 s instead of 1 s, and cannot outlive the process however it ends.
    It is still a real HTTP endpoint, which pyarrow's C++ client and subprocesses reach (moto's
    in-process patching reaches neither). Use `LocalStack(with_mlflow=False)` for a server in
    its own process. Note that moto keeps one in-memory state per process, shared with any
    `moto.mock_aws` in use.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=HOST, port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3 = LocalS3(endpoint=f"http://{host}:{port}", bucket=bucket)
        _create_bucket(s3.endpoint, bucket)
        yield s3
    finally:
        server.stop()
        # stop() ends the serving thread but leaves the listening socket open until collected.
        with contextlib.suppress(Exception):
            server._server.server_close()


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a block, restoring the previous ones."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --- command line ----------------------------------------------------------------------------


def _exports(env: dict[str, str]) -> str:
    lines = ["# the local stack; AWS_* keys are throwaway values for the loopback test server"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    return "\n".join(lines)


def _describe(stack: LocalStack) -> str:
    lines = []
    for name, s in stack.service_status().items():
        health = "healthy" if s["healthy"] else ("NOT ANSWERING" if s["running"] else "STOPPED")
        rss = f", {s['rss_mib']:.0f} MiB" if s["rss_mib"] is not None else ""
        lines.append(f"{_label(name):<17} {s['url']:<24} pid {s['pid']:<7} {health}{rss}")
        if name == cluster.HEAD:
            lines.append(f"{'':<17} GCS {s['gcs_address']} (RAY_ADDRESS), Jobs API {s['url']}")
        if _is_ray(name):
            lines.append(f"{'':<17} temp dir {s['temp_dir']}")
        lines.append(f"{'':<17} log {s['log']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orchestration.stack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in [
        ("up", "start the servers (or just print the settings if they already run)"),
        ("env", "print `export` lines for a shell"),
        ("status", "show what runs and whether it answers (exit code 1 if not all healthy)"),
        ("down", "stop the servers; fine when nothing runs"),
        ("restart-ray", "restart the Ray cluster's nodes (by PID), keeping S3 and MLflow"),
    ]:
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--dir", default=str(DEFAULT_DIR), help="state, logs, tracking database")
        if name == "up":
            sub.add_argument("--s3-port", type=int, default=0, help="0 picks a free port")
            sub.add_argument("--mlflow-port", type=int, default=0, help="0 picks a free port")
            sub.add_argument("--bucket", default=DEFAULT_BUCKET)
            sub.add_argument(
                "--ray-workers",
                type=int,
                default=0,
                help="N >= 1 adds a Ray cluster: a head and N worker nodes (default 0: none)",
            )
            sub.add_argument(
                "--ray-worker-cpus", type=int, default=1, help="CPUs per worker node (default 1)"
            )
        if name == "down":
            sub.add_argument("--purge", action="store_true", help="also delete database and logs")
    args = parser.parse_args(argv)

    try:
        if args.command == "up":
            stack = LocalStack(
                args.dir,
                s3_port=args.s3_port,
                mlflow_port=args.mlflow_port,
                bucket=args.bucket,
                detached=True,
                ray_workers=args.ray_workers,
                ray_worker_cpus=args.ray_worker_cpus,
            )
            t0 = time.monotonic()
            env = stack.up()
            verb = f"started in {time.monotonic() - t0:.1f} s" if stack.started else "already up"
            print(f"stack: {verb} ({stack.dir})\n{_describe(stack)}", file=sys.stderr)
            if stack.dashboard_url:
                print(
                    f"stack: submit with `ray job submit --address {stack.dashboard_url} -- "
                    "python -m orchestration.ablate ... storage=s3 tracking=server "
                    "cluster=address` after eval-ing the exports (token auth)",
                    file=sys.stderr,
                )
            print(_exports(env))
        elif args.command == "env":
            stack = LocalStack(args.dir)
            env = stack.env()  # raises "not running" without a state file
            if not stack.healthy():
                print("stack: warning: not all services answer (see `status`)", file=sys.stderr)
            print(_exports(env))
        elif args.command == "status":
            stack = LocalStack(args.dir)
            if stack.read_state() is None:
                print(f"stack: not running ({stack.dir})")
                return 1
            print(_describe(stack))
            return 0 if stack.healthy() else 1
        elif args.command == "restart-ray":
            stack = LocalStack(args.dir)
            t0 = time.monotonic()
            stack.restart_ray()
            print(
                f"stack: Ray cluster restarted in {time.monotonic() - t0:.1f} s ({stack.dir}); "
                "its earlier jobs are gone: submit again (a suite resumes from S3)",
                file=sys.stderr,
            )
        elif args.command == "down":
            stack = LocalStack(args.dir)
            had_cluster = cluster.HEAD in (stack.read_state() or {}).get("services", {})
            stopped = stack.down()
            verb = "stopped" if stopped else "nothing was running"
            print(f"stack: {verb} ({stack.dir})", file=sys.stderr)
            if had_cluster:  # a shell that eval'd `up` would still point Ray at the cluster
                names = " ".join(cluster.client_variables())
                print(f"stack: in a shell that eval'd `up`, now `unset {names}`", file=sys.stderr)
            if args.purge:
                for name in ("mlflow.db", "s3.log", "mlflow.log", ".lock"):
                    (stack.dir / name).unlink(missing_ok=True)
                for log in stack.dir.glob("ray-*.log"):
                    log.unlink(missing_ok=True)
                cluster.remove_node_folders(stack.dir)
                with contextlib.suppress(OSError):
                    stack.dir.rmdir()  # only if nothing else lives there
    except StackError as e:
        print(f"stack: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
