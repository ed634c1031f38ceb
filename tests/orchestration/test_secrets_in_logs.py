"""No credential in anything a run writes (issue 15): a suite on the local stack (real moto S3
and mlflow server) with sentinel AWS credentials, then every file under the working
directory, the stack's folder and Ray's session folder is searched for the sentinels."""

import os
from pathlib import Path

import pytest

SENTINEL_KEY = "AKIASENTINEL7Q4K2Z9X"
SENTINEL_SECRET = "sentinel/Secret+Value-5c1d8e2f9a7b4c3d"


def _files_holding(root: Path, needles: tuple[bytes, ...]) -> list[str]:
    hits = []
    for folder, _, names in os.walk(root, followlinks=True):
        for name in names:
            path = Path(folder) / name
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if any(needle in data for needle in needles):
                hits.append(str(path))
    return hits


@pytest.mark.slow
def test_sentinel_credentials_reach_no_file_ray_or_mlflow_writes(tmp_path):
    from orchestration.ray_session import ray_temp_dir
    from orchestration.stack import local_stack
    from tests.orchestration.test_ablate import ablate

    work = tmp_path / "work"
    work.mkdir()
    with local_stack(tmp_path / "stack", bucket="trm") as stack:
        env = {
            **stack.env(),
            "TRM_RESULTS_URI": "s3://trm/ray_results",
            "AWS_ACCESS_KEY_ID": SENTINEL_KEY,
            "AWS_SECRET_ACCESS_KEY": SENTINEL_SECRET,
        }
        result = ablate(
            work,
            "suite=smoke", "scale=smoke", "arms=[trm]", "seeds=1",
            "storage=s3", "tracking=server",
            env=env,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        needles = (SENTINEL_KEY.encode(), SENTINEL_SECRET.encode())
        assert not any(n.decode() in result.stdout + result.stderr for n in needles)
        ray_dir = ray_temp_dir(work)
        assert list(ray_dir.glob("session_*/logs/*")), "Ray wrote no logs to search"
        hits = _files_holding(work, needles) + _files_holding(tmp_path / "stack", needles)
        hits += _files_holding(ray_dir, needles)
        assert hits == []
