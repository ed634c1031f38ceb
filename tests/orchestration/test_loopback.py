"""The embedded default listens on loopback only (issue 15, part 3): every listening TCP socket
of the processes a run starts (the driver, Ray's GCS, raylet, agents and workers) is bound to
127.0.0.1 (or ::ffff:127.0.0.1, ::1), sampled from /proc while the suite runs. Ray on its own
turns a loopback node IP into the host's routable one and then listens on every interface."""

import os
import time
from pathlib import Path

import pytest

from orchestration.ray_session import ray_temp_dir, session_processes
from tests.orchestration.test_ablate import SMOKE, kill_driver, start_driver

LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


def _socket_inodes(pids: list[int]) -> dict[str, int]:
    """{socket inode: pid} of the open sockets of `pids`."""
    found = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                found[link[len("socket:[") : -1]] = pid
    return found


def listening_sockets(pids: list[int]) -> set[tuple[str, int, str]]:
    """(hex address, port, process name) of every TCP socket of `pids` in state LISTEN."""
    inodes = _socket_inodes(pids)
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            address, port = fields[1].split(":")
            pid = inodes[fields[9]]
            try:
                name = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                name = "?"
            listening.add((address, int(port, 16), name))
    return listening


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_the_embedded_default_listens_on_loopback_only(tmp_path):
    driver = start_driver(tmp_path, [*SMOKE, "arms=[trm]", "seeds=1", "scale.steps=30"])
    seen: set[tuple[str, int, str]] = set()
    names: set[str] = set()
    try:
        deadline = time.time() + 240
        while driver.poll() is None and time.time() < deadline:
            pids = [driver.pid, *session_processes(ray_temp_dir(tmp_path))]
            sockets = listening_sockets(pids)
            seen |= sockets
            names |= {name for _, _, name in sockets}
            time.sleep(0.5)
    finally:
        if driver.poll() is None:
            kill_driver(driver, tmp_path)
    assert driver.returncode == 0
    # the run was watched while Ray's daemons and a trial's worker were up
    assert {"gcs_server", "raylet"} <= names, names
    assert any(name.startswith("ray::") for name in names), names
    exposed = sorted(s for s in seen if s[0] not in LOOPBACK)
    assert exposed == [], f"listening beyond loopback: {exposed}"
