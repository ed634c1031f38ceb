"""GPU shares: allowed values, sizing from a measured peak, and `auto` on a cluster without
GPUs (a clear error before any trial, never trials pending forever)."""

import pytest

from orchestration.resources import HEADROOM, check_gpus_per_trial, share_for

GIB = 2**30


@pytest.mark.parametrize("value", [None, 0, 1, 2, 0.5, 0.25, 0.125, "auto"])
def test_allowed_gpu_requests(value):
    check_gpus_per_trial(value)


@pytest.mark.parametrize("value", [0.3, 1.5, -1, "half"])
def test_shares_that_do_not_divide_a_gpu_are_refused(value):
    with pytest.raises(ValueError, match="must be a whole number or one of"):
        check_gpus_per_trial(value)


def test_the_smallest_share_that_holds_the_peak_with_headroom():
    device = 140 * GIB  # an H200
    assert share_for(2 * GIB, device) == 0.125  # 2.6 GiB with headroom fits 17.5 GiB
    assert share_for(int(17.5 * GIB / HEADROOM), device) == 0.125  # exactly at the edge
    assert share_for(int(17.5 * GIB / HEADROOM) + 1, device) == 0.25
    assert share_for(40 * GIB, device) == 0.5
    assert share_for(100 * GIB, device) == 1.0
    with pytest.raises(ValueError, match=r"needs 120\.0 GiB .* a GPU has 140\.0 GiB"):
        share_for(120 * GIB, device)


@pytest.mark.slow
def test_auto_shares_on_a_cluster_without_gpus_stop_before_any_trial(tmp_path):
    from tests.orchestration.test_ablate import ablate

    result = ablate(tmp_path, "suite=smoke", "scale=smoke", "scale.gpus_per_trial=auto")
    assert result.returncode == 2
    assert "asks auto GPU per trial but the Ray cluster has no GPU" in result.stderr
    # checked before any dataset is built or downloaded, and before any run exists
    assert not (tmp_path / ".trm" / "datasets").exists()
    assert not (tmp_path / ".trm" / "mlflow.db").exists()


@pytest.mark.slow
def test_a_failure_after_the_parent_run_exists_ends_it_failed_with_the_error(tmp_path):
    from orchestration.ablate import plan
    from tests.orchestration.test_ablate import ablate, compose, runs

    command = ["suite=smoke", "scale=smoke", f"storage.results={tmp_path}/results"]
    execution = plan(compose(*command), tmp_path)["execution"]
    # a file where Tune's experiment folder should go: Tune fails once the parent run exists
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / execution).write_text("blocker: not a folder\n")
    result = ablate(tmp_path, *command)
    assert result.returncode != 0
    _, children, parents = runs(f"sqlite:///{tmp_path}/.trm/mlflow.db")
    assert children == [] and [p.info.status for p in parents] == ["FAILED"]
    assert execution in parents[0].data.tags["error"]


def test_a_results_location_that_cannot_be_a_folder_is_a_clear_error(tmp_path):
    from tests.orchestration.test_ablate import ablate

    (tmp_path / "blocker").write_text("a file where the results folder should go\n")
    result = ablate(
        tmp_path, "suite=smoke", "scale=smoke", f"storage.results={tmp_path}/blocker/results"
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "storage.results" in result.stderr and "blocker" in result.stderr
