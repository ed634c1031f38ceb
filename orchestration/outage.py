"""Stop a suite whose S3 or MLflow server stops answering, in bounded time (issue 15, part 4).

    with ServiceWatch(service_probes(cfg, timeout), after_s=120, every_s=10, on_outage=stop):
        ...run the suite...

Without it an outage hung the driver in the clients' own retries (pyarrow's S3 retries, MLflow's
HTTP retries) for over ten minutes, after which it died with a traceback, no report and runs
left RUNNING. A thread of the driver probes each remote service the execution depends on
(`orchestration.preflight.service_probes`: the same checks as before the start, with a short
timeout) every `every_s` seconds; one that has not answered for `after_s` seconds is an outage,
and `on_outage(probe, message, began)` (began: when it first did not answer, epoch
seconds) is called once, from that thread, while the main thread may
still be blocked inside a client's retry loop. The driver's handler (ablate.py) ends the runs
KILLED with the reason, ends the embedded Ray's processes and exits: a crash with a clear
message, which the same command resumes from the checkpoints that were written before it.

Detection takes at most `after_s + every_s + timeout` seconds. The embedded default (a local
folder, a sqlite file) has nothing to probe, and no thread is started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from orchestration.preflight import Probe
from orchestration.ray_session import own_sessions, session_processes
from orchestration.tracking import INTERRUPTED_TAG


class ServiceWatch:
    def __init__(
        self,
        probes: list[Probe],
        after_s: float,
        every_s: float,
        on_outage: Callable[[Probe, str, float], None],
    ):
        self.probes, self.after_s, self.every_s = probes, after_s, every_s
        self.on_outage = on_outage
        self.outage: str | None = None  # the message, once one was declared
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _failing_since(self, probe: Probe, since: dict[str, float]) -> str | None:
        """Probe once: None when it answered, else the probe's error message."""
        asked = time.monotonic()
        try:
            probe.check()
        except Exception as err:  # PreflightError, or anything a client raises
            since.setdefault(probe.where, asked)
            return getattr(err, "cause", None) or f"{type(err).__name__}: {err}"
        since.pop(probe.where, None)
        return None

    def _run(self) -> None:
        since: dict[str, float] = {}  # probe → when it first did not answer
        while not self._stop.is_set():
            for probe in self.probes:
                error = self._failing_since(probe, since)
                if error is None or self._stop.is_set():
                    continue
                silent_s = time.monotonic() - since[probe.where]
                if silent_s >= self.after_s:
                    self.outage = (
                        f"{probe.service} ({probe.where}) has not answered for {silent_s:.0f} s "
                        f"(outage.after_s={self.after_s:g}); last error: {error}"
                    )
                    self.on_outage(probe, self.outage, time.time() - silent_s)
                    return
            self._stop.wait(self.every_s)

    def __enter__(self) -> ServiceWatch:
        if self.probes:
            self._thread = threading.Thread(target=self._run, name="service-watch", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.every_s + 30)


EXIT_OUTAGE = 3  # the driver's exit status after an outage stopped the suite
STOP_BOUND_S = 30.0  # at most this long for closing the runs when the outage stops the suite


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _bounded(step: Callable[[], object], seconds: float = STOP_BOUND_S) -> bool:
    """Run `step` in a thread of its own for at most `seconds`; whether it finished."""
    done = threading.Event()

    def run() -> None:
        try:
            step()
        except Exception as err:  # the stop goes on; say what this step could not do
            print(f"  ({type(err).__name__}: {err})", file=sys.stderr)
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    return done.wait(seconds)


class StopOnOutage:
    """What the driver does when the watch declares an outage: ends the execution's runs KILLED
    with the reason (unless MLflow is the service that is down: then the next run of the
    command ends those it does not resume), prints one message, ends the embedded Ray's
    processes by PID and exits with EXIT_OUTAGE. Nothing is deleted: the rerun resumes from
    the checkpoints that were written.

    Ray is never shut down from this (the watch's) thread: `ray.shutdown()` here races the
    main thread's Tune loop, whose next Ray call then ends the process with status 1 before
    the message is out (seen in CI). Instead the embedded session's processes are frozen
    (SIGSTOP: no trial writes while the runs are closed; a stopped raylet looks slow, not dead,
    to the driver), then killed by PID just before `os._exit`. On a cluster (`cluster.address`)
    the driver's exit is enough: Ray ends the actors a dead driver owned."""

    def __init__(self, embedded_ray_dir: Path | None):
        self.embedded_ray_dir = embedded_ray_dir
        self.runs: tuple | None = None  # (tracker, experiment_id, parent run), once they exist

    def __call__(self, probe: Probe, message: str, began: float) -> None:
        ray_processes = self._embedded_ray_processes()
        _signal_all(ray_processes, signal.SIGSTOP)
        closed = self._close_runs(probe, message, int(began * 1000))
        print(
            f"error: {message}.\nThe suite stopped: {closed} Every checkpoint written before "
            "the outage is kept; once the service answers again, the same command continues "
            "from them.",
            file=sys.stderr,
            flush=True,
        )
        sys.stdout.flush()
        _signal_all(ray_processes, signal.SIGKILL)
        os._exit(EXIT_OUTAGE)

    def _embedded_ray_processes(self) -> list[int]:
        if self.embedded_ray_dir is None:
            return []
        return [
            pid
            for session in own_sessions(self.embedded_ray_dir)
            for pid in session_processes(self.embedded_ray_dir, session)
        ]

    def _close_runs(self, probe: Probe, message: str, began_ms: int) -> str:
        if self.runs is None:
            return "no MLflow run had been started."
        tracker, experiment_id, parent = self.runs
        if probe.service == "MLflow":
            return (
                "MLflow cannot be written to, so this execution's runs still show RUNNING; "
                "the next run of the command ends those it does not resume (KILLED, tagged)."
            )
        reason = f"the suite stopped for an outage: {message}"
        counted: list[int] = []

        def close() -> None:
            counted.append(
                tracker.end_running_children(
                    experiment_id, parent, "KILLED", reason, failed_since_ms=began_ms
                )
            )
            tracker.client.set_tag(parent, INTERRUPTED_TAG, reason)
            tracker.client.set_terminated(parent, status="KILLED")

        if not _bounded(close):
            return "MLflow did not answer in time to close the runs."
        return (
            f"{counted[0]} trial run(s) and the suite's run ended KILLED, tagged "
            f"{INTERRUPTED_TAG} with the reason."
        )
