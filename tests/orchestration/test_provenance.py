"""The code identity that keys an execution: commit plus local changes to the packages only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from orchestration.provenance import REPO, code_identity


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def _checkout(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "trm_core").mkdir(parents=True)
    (repo / "trm_core" / "trainer.py").write_text("STEP = 1\n")
    (repo / ".gitignore").write_text(".trm/\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    return repo


def test_a_clean_checkout_is_its_commit(tmp_path):
    repo = _checkout(tmp_path)
    code = code_identity(repo)
    assert len(code.commit) == 40 and code.label == code.commit and not code.diff


def test_an_edit_to_a_package_changes_the_identity_and_the_edit_is_recorded(tmp_path):
    repo = _checkout(tmp_path)
    clean = code_identity(repo)
    (repo / "trm_core" / "trainer.py").write_text("STEP = 2\n")
    edited = code_identity(repo)
    assert edited.commit == clean.commit and edited.label != clean.label
    assert edited.label.startswith(f"{clean.commit}+diff.") and "+STEP = 2" in edited.diff
    (repo / "trm_core" / "trainer.py").write_text("STEP = 3\n")
    assert code_identity(repo).label not in (clean.label, edited.label)


def test_new_files_in_packages_count_and_folders_outside_them_do_not(tmp_path):
    repo = _checkout(tmp_path)
    clean = code_identity(repo).label
    for outside in ("multirun/2026-12-02/.hydra/config.yaml", ".trm/mlflow.db", "notes.md"):
        (repo / outside).parent.mkdir(parents=True, exist_ok=True)
        (repo / outside).write_text("anything\n")
    assert code_identity(repo).label == clean
    (repo / "trm_core" / "new_layer.py").write_text("X = 1\n")
    changed = code_identity(repo)
    assert changed.label != clean and "untracked file trm_core/new_layer.py" in changed.diff


def test_outside_a_checkout_the_image_commit_is_used(tmp_path, monkeypatch):
    monkeypatch.delenv("TRM_GIT_COMMIT", raising=False)
    assert code_identity(tmp_path).label == "unknown"
    monkeypatch.setenv("TRM_GIT_COMMIT", "abc123")
    assert code_identity(tmp_path).label == "abc123"
    assert code_identity(REPO).commit not in ("unknown", "abc123")  # the checkout wins


def _planned(tmp_path, code, *overrides):
    from orchestration.ablate import plan
    from tests.orchestration.test_ablate import compose

    cfg = compose("suite=smoke", "scale=smoke", "arms=[trm]", "seeds=1", *overrides)
    return plan(cfg, tmp_path, code=code)


def test_the_execution_is_keyed_by_code_and_config(tmp_path):
    from orchestration.provenance import CodeIdentity

    clean = _planned(tmp_path, CodeIdentity("a" * 40, ""))
    again = _planned(tmp_path, CodeIdentity("a" * 40, ""))
    edited = _planned(tmp_path, CodeIdentity("a" * 40, "+broken\n"))
    wider = _planned(tmp_path, CodeIdentity("a" * 40, ""), "model.hidden=48")
    assert clean["execution"] == again["execution"]
    assert edited["execution"] != clean["execution"]
    assert edited["config_digest"] == clean["config_digest"]  # same config, other code
    assert wider["config_digest"] != clean["config_digest"]
    (spec,) = edited["specs"]
    assert spec.tags["trm.code"] == f"{'a' * 40}+diff.{edited['code'].diff_digest}"
    assert spec.tags["mlflow.source.git.commit"] == "a" * 40 and spec.tags["mlflow.user"]


def test_the_parent_run_records_command_overrides_code_and_says_when_code_changed(tmp_path, capsys):
    from orchestration.ablate import _parent_run
    from orchestration.provenance import CodeIdentity
    from orchestration.tracking import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = tracker.experiment("trm-lab/smoke", (tmp_path / "artifacts").as_uri())

    def parent(code, *overrides):
        planned = _planned(tmp_path, code, *overrides)
        command = {
            "line": "python -m orchestration.ablate " + " ".join(overrides),
            "overrides": list(overrides),
        }
        run_id = _parent_run(tracker, experiment, planned, planned["execution"], command)
        return tracker.client.get_run(run_id), planned

    first, _ = parent(CodeIdentity("a" * 40, ""), "model.hidden=16")
    assert "code changed" not in capsys.readouterr().err
    second, planned = parent(CodeIdentity("a" * 40, "+edit\n"), "model.hidden=16")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"code changed since execution {first.data.tags['trm.execution']}"
    )
    assert planned["execution"] in err[0]
    artifacts = [a.path for a in tracker.client.list_artifacts(second.info.run_id, "code")]
    assert artifacts == ["code/diff.patch"]
    third, _ = parent(CodeIdentity("a" * 40, ""), "model.hidden=32")
    assert first.data.params["model.hidden"] == "16" and third.data.params["model.hidden"] == "32"
    tags = third.data.tags
    assert tags["trm.overrides"] == '["model.hidden=32"]' and "hidden=32" in tags["trm.command"]
    assert tags["mlflow.source.git.commit"] == "a" * 40 and tags["mlflow.user"]


def test_peak_memory_is_measured_per_trial_not_per_worker_lifetime():
    """A reused actor's later trials must not inherit an earlier trial's peak. Measured in a
    fresh process: in the test session's own, earlier tests' memory (freed or not) decides
    what the reset can give back."""
    probe = """
import numpy as np, torch
from orchestration.trial import _peak_memory_gib, _reset_peak_memory
cpu = torch.device("cpu")
block = np.ones(2**28, dtype=np.uint8)  # 256 MiB touched: a large first trial
del block
before = _peak_memory_gib(cpu)
_reset_peak_memory(cpu)
print(before, _peak_memory_gib(cpu))
"""
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    before, after = map(float, out.split())
    assert before - after > 0.2, (before, after)
