"""A multi-node Ray cluster on this machine, on loopback: a head and N worker nodes, each a
`ray start --block` with its own temp dir, ports and resources. `orchestration.stack` starts
it next to its S3 and MLflow servers (`up --ray-workers N`); this module holds the parts.

    eval "$(python -m orchestration.stack up --ray-workers 2)"
    ray job submit -- python -m orchestration.ablate suite=smoke scale=smoke \\
        storage=s3 tracking=server cluster=address
    python -m orchestration.stack down

What each node gets, at `ray start` (never through a job's runtime env, which the dashboard
shows): the stack's S3 endpoint, region and throwaway credentials, TRM_DATASET_STORE,
TRM_RESULTS_URI, MLFLOW_TRACKING_URI, this venv's `bin` first on PATH (so a job's `python` is
the project's), token auth, and the loopback switch below. The head has `--num-cpus 0`, as
the KubeRay manifests: it runs the job's driver, GCS and dashboard; trials go to the workers.

Loopback. Ray's CLI turns `--node-ip-address 127.0.0.1` and `--address 127.0.0.1:PORT` into
the host's routable IP unless its single-machine switch (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0)
is set, and with that switch set it refuses to add a worker node ("Multi-node Ray clusters are
not supported on Windows and OSX"). So each node runs Ray's own `ray start` through
`python -m orchestration.cluster node ARGS...`, which sets the switch for every process the node
starts (daemons, workers, job drivers: they advertise and bind 127.0.0.1, as the embedded Ray
does, see orchestration.ray_session.keep_on_loopback) and, in its own process only, lets the
CLI add a worker node and keep a loopback address as given. Nothing else of `ray start` changes.

Token auth (Ray >= 2.52; 2.60 turns it on by default for local clusters only). The stack's
cluster runs with RAY_AUTH_MODE=token: a random token is written to `<stack dir>/ray/auth_token`
(mode 0600) and every node and client reads it from there (RAY_AUTH_TOKEN_PATH), so it is
never on a command line or in a log (tests/orchestration/test_cluster.py checks both), and
`down` deletes it. Other users of the machine cannot submit jobs to it.

Stopping. A node is stopped by ending its processes by PID: those of the guard's process group
(orchestration.stack) and those whose command line names the node's temp dir, with their
descendants (orchestration.ray_session.session_processes), collected before anything is
signalled (Ray's workers rename themselves and are found through their parent). Never
`ray stop`, which ends every Ray of the user.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import time
import urllib.request
from pathlib import Path

from orchestration.ray_session import (
    CLUSTER_MODE_VARIABLE,
    end_processes,
    pid_alive,
    session_processes,
    short_enough_temp_dir,
)

HOST = "127.0.0.1"
HEAD = "ray-head"
NODE_LABEL = "trm-node"  # a Ray node label: the node's name in the stack (ray-head, ray-worker-1)
TOKEN_FILE = "auth_token"
# Per node; Ray's object store holds little here (checkpoints go to S3). Ray's floor is 75 MiB.
OBJECT_STORE_BYTES = 256 * 1024 * 1024
# Measured on 2 cores: a head answers in about 6 s, a worker joins in about 4 s; margins absorb a
# loaded machine.
HEAD_TIMEOUT_S = 90.0
WORKERS_TIMEOUT_S = 90.0
# What a job's driver on this machine needs besides RAY_ADDRESS to reach a loopback GCS.
CLIENT_VARIABLES = (CLUSTER_MODE_VARIABLE, "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")
# Never inherited by a node from whoever runs `up`: a node is given its own.
_NOT_INHERITED = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


class ClusterError(RuntimeError):
    """The cluster could not start, or was asked for with settings that cannot work."""


def worker_name(index: int) -> str:
    return f"ray-worker-{index}"


def check_sizes(workers: int, worker_cpus: int) -> None:
    """Bad sizes are refused before anything starts, naming what is allowed."""
    if isinstance(workers, bool) or not isinstance(workers, int) or not 0 <= workers <= 16:
        raise ClusterError(f"--ray-workers must be a whole number from 0 to 16, got {workers!r}")
    if isinstance(worker_cpus, bool) or not isinstance(worker_cpus, int) or worker_cpus < 1:
        raise ClusterError(f"--ray-worker-cpus must be a whole number >= 1, got {worker_cpus!r}")


# --- folders ---------------------------------------------------------------------------------


def node_home(stack_dir: Path, name: str) -> Path:
    """A node's own folder: its processes' working directory (a job driver's `.trm/` lands here)."""
    return stack_dir / "ray" / name


def node_temp_dir(stack_dir: Path, name: str) -> Path:
    """The node's Ray temp dir (created): `<home>/tmp` when short enough for Ray's sockets
    (107 bytes), else a folder under the system temp dir named by a digest of that path, which
    `<home>/tmp` then links to."""
    return short_enough_temp_dir(node_home(stack_dir, name) / "tmp")


def remove_node_folders(stack_dir: Path) -> None:
    """`down --purge`: the nodes' folders and the short temp dirs they link to."""
    root = stack_dir / "ray"
    for link in root.glob("*/tmp"):
        if link.is_symlink():
            with contextlib.suppress(OSError):
                shutil.rmtree(link.resolve())
    shutil.rmtree(root, ignore_errors=True)


# --- token -----------------------------------------------------------------------------------


def token_path(stack_dir: Path) -> Path:
    return stack_dir / "ray" / TOKEN_FILE


def new_token(stack_dir: Path) -> Path:
    """A fresh random token in a file only this user can read; returns its path."""
    path = token_path(stack_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path


def _token(stack_dir: Path) -> str | None:
    try:
        return token_path(stack_dir).read_text().strip() or None
    except OSError:
        return None


# --- commands and environment ----------------------------------------------------------------


def node_command(
    name: str,
    temp_dir: Path,
    *,
    head_ports: dict[str, int] | None = None,
    address: str | None = None,
    agent_port: int,
    num_cpus: int,
) -> list[str]:
    """The node's command: Ray's `ray start --block` (through `node` below, for loopback).
    A head is given `head_ports` (gcs, dashboard, client); a worker the head's `address`."""
    args = [
        "--block",
        f"--node-ip-address={HOST}",
        f"--temp-dir={temp_dir}",
        f"--num-cpus={num_cpus}",
        "--num-gpus=0",
        f"--object-store-memory={OBJECT_STORE_BYTES}",
        f"--dashboard-agent-listen-port={agent_port}",
        # 0: workers bind ports the OS picks, so the nodes' ranges never collide
        "--min-worker-port=0",
        "--max-worker-port=0",
        "--disable-usage-stats",
        f"--labels={NODE_LABEL}={name}",
    ]
    if head_ports is not None:
        args += [
            "--head",
            f"--port={head_ports['gcs']}",
            "--include-dashboard=true",
            f"--dashboard-host={HOST}",
            f"--dashboard-port={head_ports['dashboard']}",
            f"--ray-client-server-port={head_ports['client']}",
        ]
    else:
        args.append(f"--address={address}")
    return [sys.executable, "-m", "orchestration.cluster", "node", *args]


def node_env(base: dict[str, str], services: dict[str, str], stack_dir: Path) -> dict[str, str]:
    """A node's environment: `base` (the stack's server environment: throwaway S3 credentials,
    no AWS_* of the caller) with the services' variables, this venv first on PATH, loopback and
    token auth; no Ray address or token of the caller's shell."""
    env = {k: v for k, v in base.items() if k not in _NOT_INHERITED}
    env.update(services)
    bin_dir = str(Path(sys.executable).parent)
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != bin_dir]
    env["PATH"] = os.pathsep.join([bin_dir, *path])
    env.update(
        {
            CLUSTER_MODE_VARIABLE: "0",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(token_path(stack_dir)),
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_CHDIR_TO_TRIAL_DIR": "0",
            # SIGTERM to `ray start --block` first drains the node for up to 30 s (for Ray
            # Serve), and longer than that when the GCS is gone: `down` stops at once instead.
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        }
    )
    return env


def client_variables() -> tuple[str, ...]:
    """The names `client_env` sets (what a shell unsets after `down`)."""
    return ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", *CLIENT_VARIABLES)


def client_env(state: dict, stack_dir: Path) -> dict[str, str]:
    """What a shell on this machine needs for `ray job submit` and `cluster=address`."""
    head = state["services"][HEAD]
    return {
        "RAY_ADDRESS": head["gcs_address"],
        "RAY_API_SERVER_ADDRESS": head["url"],
        CLUSTER_MODE_VARIABLE: "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_path(stack_dir)),
    }


# --- health ----------------------------------------------------------------------------------


def _get(url: str, stack_dir: Path, timeout: float = 3.0) -> dict:
    request = urllib.request.Request(url)
    token = _token(stack_dir)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    with opener.open(request, timeout=timeout) as response:
        return json.loads(response.read())


def alive_nodes(dashboard_url: str, stack_dir: Path) -> list[dict] | None:
    """The cluster's ALIVE nodes from the head's state API (node_id, is_head_node,
    resources_total, ...); None when the head does not answer."""
    try:
        body = _get(f"{dashboard_url}/api/v0/nodes?limit=1000&detail=1", stack_dir)
        rows = body["data"]["result"]["result"]
    except Exception:
        return None
    return [r for r in rows if r.get("state") == "ALIVE"]


def head_healthy(dashboard_url: str, stack_dir: Path) -> bool:
    nodes = alive_nodes(dashboard_url, stack_dir)
    return bool(nodes) and any(n.get("is_head_node") for n in nodes)


# --- processes -------------------------------------------------------------------------------


def node_processes(temp_dir: str | Path) -> list[int]:
    """PIDs of a node's Ray processes: command lines naming its temp dir, and descendants."""
    path = Path(temp_dir)
    return session_processes(path) if path.is_dir() else []


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, ...); None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def running(pid: int) -> bool:
    """Alive and not a zombie (an exited child its parent has yet to reap runs nothing)."""
    stat = _stat(pid)
    if stat is None:
        return pid_alive(pid) and not Path("/proc/self/stat").exists()  # no /proc: trust kill
    return stat[0] not in ("Z", "X")


def end_node(temp_dir: str | Path, guard: int, grace_s: float) -> bool:
    """End a node's processes by PID (its `guard` aside: the stack stops that one). Every PID is
    collected before the first signal: a worker whose raylet is gone is no longer found through
    its parent. SIGTERM goes to the node's `ray start` first, which shuts its node down in
    Ray's order (about 1 s for an idle worker, 2 s for a head); whatever still runs after
    `grace_s` is ended (SIGTERM, then SIGKILL). True if there was anything to end."""
    pids = [p for p in node_processes(temp_dir) if p != guard]
    starters = [p for p in pids if (stat := _stat(p)) and int(stat[1]) == guard]
    for pid in starters or pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(running(p) for p in pids):
        time.sleep(0.1)
    left = [p for p in {*pids, *node_processes(temp_dir)} if p != guard and running(p)]
    if left:  # did not stop in time, or started while the others stopped
        end_processes(left, 2.0)
    return bool(pids)


# --- the node runner -------------------------------------------------------------------------


def _run_node(argv: list[str]) -> int:
    """Ray's `ray start ARGV`, for a node of a cluster on this machine's loopback."""
    # Every process the node starts inherits this: they advertise and bind 127.0.0.1.
    os.environ[CLUSTER_MODE_VARIABLE] = "0"
    from ray._private import ray_constants, services
    from ray.scripts import scripts

    # In this process only: let `ray start --address` add a worker node (refused with the
    # switch above), and keep a loopback address as given instead of turning it into the
    # host's routable IP (which Ray does when the switch is off).
    ray_constants.ENABLE_RAY_CLUSTER = True
    resolve = services.resolve_ip_for_localhost
    services.resolve_ip_for_localhost = lambda host: host if host == HOST else resolve(host)
    sys.argv = ["ray", "start", *argv]
    return scripts.main()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "node":
        print(__doc__.strip())
        print("\nusage: python -m orchestration.cluster node RAY_START_ARGS...", file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    return _run_node(args[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
