"""Where the embedded Ray keeps its session files, and the sweep of what a killed driver left.

`ray.init()` on its own writes sessions, sockets and lock files under the system temp dir and,
when its driver is killed, leaves its daemons (raylet, GCS, agents) running for minutes. The
embedded default instead gives Ray a temp dir of this working directory's own
(`ray_temp_dir`), and each start sweeps that dir (`sweep_stale_sessions`): a session whose
driver is gone has its leftover processes ended, by PID, and its folder removed. Only
processes whose command line names a session under that dir, and their descendants, are ever
ended: never another Ray of the user's (no `ray stop --force`, which ends all of them).

    from orchestration.ray_session import ray_temp_dir, session_processes
    session_processes(ray_temp_dir(Path.cwd()))   # PIDs of the Ray processes started here

Unix sockets live inside the session folder and their paths may not exceed 107 bytes, so the
folder is `.trm/ray` when that is short enough, else a folder under the system temp dir named
by a digest of `.trm/ray`, which `.trm/ray` then links to.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import tempfile
import time
from pathlib import Path

# session_2026-12-04_02-30-00_123456_12345/sockets/plasma_store: the longest socket path Ray
# writes under its temp dir, plus margin; AF_UNIX paths are limited to 107 bytes on Linux.
SOCKET_SUFFIX_LEN = 72
SOCKET_PATH_MAX = 107
SESSION_PATTERN = re.compile(r"^session_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_\d+_(\d+)$")


def ray_temp_dir(base: Path) -> Path:
    """The temp dir the embedded Ray of working directory `base` uses (created)."""
    return short_enough_temp_dir(base / ".trm" / "ray")


def short_enough_temp_dir(home: Path) -> Path:
    """`home` (created) when short enough for Ray's socket paths (107 bytes), else a folder
    under the system temp dir named by a digest of `home`, which `home` then links to."""
    home = home.absolute()
    if len(str(home)) + SOCKET_SUFFIX_LEN <= SOCKET_PATH_MAX and not home.is_symlink():
        home.mkdir(parents=True, exist_ok=True)
        return home
    digest = hashlib.sha256(str(home).encode()).hexdigest()[:12]
    short = Path(tempfile.gettempdir()) / f"trm-ray-{digest}"
    short.mkdir(parents=True, exist_ok=True)
    if not home.is_symlink():
        home.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            if home.is_dir():
                shutil.rmtree(home)
            home.symlink_to(short, target_is_directory=True)
    return short


# Ray's own switch for single-machine use (meant for macOS and Windows): with it off, Ray takes
# 127.0.0.1 as the node's IP. Without it Ray replaces a loopback `_node_ip_address` by the host's
# routable IP (services.resolve_ip_for_localhost), and its servers then listen on every
# interface (GCS, raylet, workers) or on that IP (agents), for anyone on the network.
CLUSTER_MODE_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def keep_on_loopback() -> None:
    """Make the embedded Ray of this process advertise and bind 127.0.0.1 only, its daemons
    and workers included (they inherit the variable). Call before `ray.init()`; never for a
    driver that joins a cluster, which other nodes must reach."""
    os.environ[CLUSTER_MODE_VARIABLE] = "0"
    from ray._private import ray_constants  # read at import: ray may be imported already

    ray_constants.ENABLE_RAY_CLUSTER = False


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists on this host (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _processes() -> dict[int, tuple[int, str]]:
    """{pid: (parent pid, command line)} of every process /proc shows."""
    table: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        table[int(entry.name)] = (ppid, cmdline)
    return table


def session_processes(temp_dir: Path, session: str | None = None) -> list[int]:
    """PIDs of the processes whose command line names `temp_dir` (or one `session` folder in
    it), with all their descendants (Ray's workers rename themselves `ray::…`)."""
    needle = str(temp_dir / session) if session else str(temp_dir)
    real = str(Path(needle).resolve())
    table = _processes()
    found = {pid for pid, (_, cmd) in table.items() if needle in cmd or real in cmd}
    found.discard(os.getpid())
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    stack = list(found)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found and child != os.getpid():
                found.add(child)
                stack.append(child)
    return sorted(found)


def end_processes(pids: list[int], grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL whatever is still alive after `grace_s`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
            time.sleep(0.1)
        pids = [p for p in pids if pid_alive(p)]
        if not pids:
            return


def own_sessions(temp_dir: Path, pid: int | None = None) -> list[str]:
    """The session folders under `temp_dir` that process `pid` (default: this one) started."""
    pid = os.getpid() if pid is None else pid
    return [
        entry.name
        for entry in (sorted(temp_dir.iterdir()) if temp_dir.is_dir() else [])
        if (match := SESSION_PATTERN.match(entry.name)) and int(match.group(1)) == pid
    ]


def sweep_stale_sessions(temp_dir: Path) -> list[str]:
    """End the processes and remove the folders of sessions whose starting process is gone;
    returns the names of the sessions swept. Live sessions (another suite running from this
    working directory) are left alone."""
    swept = []
    for entry in sorted(temp_dir.iterdir()) if temp_dir.is_dir() else []:
        match = SESSION_PATTERN.match(entry.name)
        if not match or entry.is_symlink() or pid_alive(int(match.group(1))):
            continue
        end_processes(session_processes(temp_dir, entry.name))
        shutil.rmtree(entry, ignore_errors=True)
        swept.append(entry.name)
    latest = temp_dir / "session_latest"
    if latest.is_symlink() and not latest.exists():
        latest.unlink()
    return swept
