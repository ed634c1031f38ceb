"""What code and who produced a run: the commit plus a digest of local changes to the packages.

    from orchestration.provenance import code_identity
    code = code_identity()        # CodeIdentity(commit=..., diff=...)
    code.label                    # "3f2a…c1" or "3f2a…c1+diff.9b04e1d2a7c3"

A number depends on the code that computed it, so an execution is keyed by `code.label`: the
commit plus the sha256 of `git diff HEAD` over the tracked files of the packages that decide
results (PACKAGES) and of any new, not yet tracked files inside them. Folders outside the
packages (Hydra's `multirun/`, `.trm/`, notebooks) never change the key. Without a checkout
(the container image has no .git) the commit comes from TRM_GIT_COMMIT, set at image build.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # the code that runs, wherever the command is run
PACKAGES = ("trm_core", "datasets", "orchestration", "ablations", "pyproject.toml")
DIFF_DIGEST_CHARS = 12


@dataclass(frozen=True)
class CodeIdentity:
    commit: str  # 40 hex digits, or "unknown"
    diff: str  # local changes to PACKAGES as a patch ("" for a clean checkout)

    @property
    def diff_digest(self) -> str:
        if not self.diff:
            return ""
        return hashlib.sha256(self.diff.encode()).hexdigest()[:DIFF_DIGEST_CHARS]

    @property
    def label(self) -> str:
        return self.commit + (f"+diff.{self.diff_digest}" if self.diff else "")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True, timeout=30
    ).stdout


def _untracked(repo: Path, paths: list[str]) -> str:
    """New files inside the packages (not ignored, not yet added) as patch-like sections."""
    parts = []
    for name in paths:
        data = (repo / name).read_bytes()
        try:
            text = data.decode()
        except UnicodeDecodeError:
            text = f"binary, sha256 {hashlib.sha256(data).hexdigest()}\n"
        parts.append(f"untracked file {name}\n{text}")
    return "".join(parts)


def code_identity(repo: Path = REPO) -> CodeIdentity:
    try:
        commit = _git(repo, "rev-parse", "HEAD").strip()
        diff = _git(
            repo, "diff", "HEAD", "--no-color", "--no-ext-diff", "--binary", "--", *PACKAGES
        )
        new = _git(repo, "ls-files", "--others", "--exclude-standard", "-z", "--", *PACKAGES)
        diff += _untracked(repo, sorted(filter(None, new.split("\0"))))
        return CodeIdentity(commit, diff)
    except (OSError, subprocess.SubprocessError):
        return CodeIdentity(os.environ.get("TRM_GIT_COMMIT", "unknown"), "")


def user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return os.environ.get("USER", "unknown")


def run_tags(code: CodeIdentity) -> dict[str, str]:
    """MLflow's own source tags (shown in its UI) plus ours, for every run of an execution."""
    return {
        "mlflow.source.git.commit": code.commit,
        "mlflow.source.name": "orchestration.ablate",
        "mlflow.source.type": "JOB",
        "mlflow.user": user(),
        "trm.git_commit": code.commit,
        "trm.code": code.label,
    }
