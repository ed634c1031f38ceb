"""The RayJob's entrypoint is a valid `orchestration.ablate` command under the project's own
Hydra config, run in the environment the manifests give the Ray head (ConfigMaps resolved,
Secrets as placeholders), and it points at the services the same manifests deploy."""

from urllib.parse import urlparse

import pytest
import yaml

from orchestration.command import CommandError, check, entrypoint, parse
from tests.infra.manifests import K8S, container_env, one, render

JOBS = {"gpu": "paper", "cpu-mini": "mini"}  # overlay → the scale it runs


def _head(docs):
    spec = one(docs, "RayJob")["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    (container,) = spec["containers"]
    return container


def _worker(docs):
    (group,) = one(docs, "RayJob")["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    (container,) = group["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("overlay, scale", JOBS.items())
def test_entrypoint_is_a_valid_suite_command_in_the_head_environment(overlay, scale):
    docs = render(overlay)
    entrypoint = one(docs, "RayJob")["spec"]["entrypoint"]
    checked = check(entrypoint, container_env(_head(docs), docs))
    assert checked.overrides[:1] == ("suite=paper",)
    cfg = checked.config
    # Table 1: 9 arms x the scale's seeds (paper: the suite's 3; mini: 2)
    assert checked.suite == "paper" and checked.seeds == (cfg["scale"]["seeds"] or 3)
    assert checked.trials == 9 * checked.seeds
    assert cfg["scale"]["name"] == scale
    assert cfg["resume"] is True  # a retried RayJob continues from S3 instead of restarting
    assert cfg["cluster"]["address"], "must join the job's Ray cluster, not start a local one"
    for key in ("datasets", "results"):
        assert cfg["storage"][key].startswith("s3://"), cfg["storage"]
    # the tracking URI names the MLflow Service these manifests deploy, on its port
    uri = urlparse(cfg["tracking"]["uri"])
    service = one(docs, "Service", "mlflow")
    assert uri.scheme == "http" and uri.hostname == service["metadata"]["name"]
    assert uri.port == service["spec"]["ports"][0]["port"]


@pytest.mark.parametrize("overlay, scale", JOBS.items())
def test_workers_fit_one_trial_of_the_scale(overlay, scale):
    docs = render(overlay)
    cfg = check(one(docs, "RayJob")["spec"]["entrypoint"], container_env(_head(docs), docs)).config
    limits = _worker(docs)["resources"]["limits"]
    assert float(limits["cpu"]) >= cfg["scale"]["cpus_per_trial"]
    gpus = float(limits.get("nvidia.com/gpu", 0))
    assert gpus >= (cfg["scale"]["gpus_per_trial"] or 0)
    if not gpus:  # a GPU share on a CPU-only cluster leaves trials PENDING forever (STACK.md)
        assert not cfg["scale"]["gpus_per_trial"]


def test_the_manifests_run_the_entrypoint_orchestration_command_builds():
    """One place for the command: the RayJob's entrypoint (and the cpu-mini overlay's patch of
    it) is what `orchestration.command.entrypoint` builds, the same function whose command
    tests/orchestration/test_cluster.py submits through the Jobs API to a real cluster. Read
    from the files, so it holds without kubectl too."""
    rayjob = yaml.safe_load((K8S / "components" / "rayjob" / "rayjob.yaml").read_text())
    assert rayjob["spec"]["entrypoint"] == entrypoint("paper", "paper")
    patches = yaml.safe_load((K8S / "overlays" / "cpu-mini" / "rayjob-cpu.yaml").read_text())
    (patch,) = [p for p in patches if p["path"] == "/spec/entrypoint"]
    assert patch["value"] == entrypoint("paper", "mini")


@pytest.mark.parametrize("overlay, scale", JOBS.items())
def test_the_rendered_entrypoint_is_the_built_one(overlay, scale):
    assert one(render(overlay), "RayJob")["spec"]["entrypoint"] == entrypoint("paper", scale)


ARC_ARMS = "arms=[trm_att_arc1,hrm_arc1,trm_mlp_arc1,trm_att_arc2,hrm_arc2,trm_mlp_arc2]"
ARC_ON_4_GPUS = ("main", "paper", ARC_ARMS, "scale.workers_per_trial=4")


def test_the_arc_overlay_runs_each_trial_on_a_four_gpu_worker_group_that_fits_a_pod():
    """The paper trains ARC on 4 GPUs per run: the gpu-arc overlay runs the main suite's ARC rows
    with 4 data-parallel workers per trial; a worker pod holds all 4 of a trial's workers."""
    patches = yaml.safe_load((K8S / "overlays" / "gpu-arc" / "rayjob-arc-4gpu.yaml").read_text())
    (patch,) = [p for p in patches if p["path"] == "/spec/entrypoint"]
    assert patch["value"] == entrypoint(*ARC_ON_4_GPUS)
    docs = render("gpu-arc")
    command = one(docs, "RayJob")["spec"]["entrypoint"]
    assert command == entrypoint(*ARC_ON_4_GPUS)
    checked = check(command, container_env(_head(docs), docs))
    scale = checked.config["scale"]
    assert checked.suite == "main" and checked.trials == 6 * checked.seeds
    assert {arm[-4:] for arm in checked.arms} == {"arc1", "arc2"}
    workers = scale["workers_per_trial"]
    assert workers == 4 and 768 % workers == 0  # the ARC global batch splits over them
    limits = _worker(docs)["resources"]["limits"]
    assert float(limits["cpu"]) >= workers * scale["cpus_per_trial"]
    assert float(limits["nvidia.com/gpu"]) >= workers * scale["gpus_per_trial"]


@pytest.mark.parametrize(
    "args, message",
    [
        (("pa per",), "suite must be a name (letters, digits, '_', '.', '-'), got 'pa per'"),
        (("paper", "mini;rm"), "scale must be a name"),
        (("paper", "paper", "--cfg"), "would not run a suite"),
        (("paper", "paper", "seeds"), "must be key=value"),
    ],
)
def test_a_bad_entrypoint_request_is_refused(args, message):
    with pytest.raises(CommandError) as err:
        entrypoint(*args)
    assert message in str(err.value)


def test_entrypoint_without_the_settings_is_refused():
    docs = render("gpu")
    entrypoint = one(docs, "RayJob")["spec"]["entrypoint"]
    with pytest.raises(CommandError, match="TRM_DATASET_STORE"):
        check(entrypoint, {})


@pytest.mark.parametrize(
    "command, message",
    [
        ("python -m orchestration.ablat suite=paper", "expected `python -m orchestration.ablate"),
        ("ray job submit -- python -m orchestration.ablate", "expected `python -m"),
        ("python -m orchestration.ablate suite=paper --cfg job", "would not run a suite"),
        ("python -m orchestration.ablate suite paper", "must be key=value"),
        ("python -m orchestration.ablate 'suite=paper", "cannot split"),
    ],
)
def test_malformed_command_lines_are_refused(command, message):
    with pytest.raises(CommandError) as err:
        parse(command)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ("suite=nope", "unknown suite 'nope'"),
        ("suite=paper scale=huge", "Could not find 'scale/huge'"),
        ("suite=paper arms=[trm,bogus]", "has no arm 'bogus'"),
        ("suite=paper model.wings=2", "Could not override 'model.wings'"),
        ("suite=paper model.hidden=0", "model.hidden=0 is not allowed"),
        ("suite=paper model.n=0 override_declared=true", "model.n=0 is not allowed"),
        ("suite=paper model.n=4", "model.n is declared by arms ['hrm', 'layers4_n3', 't2_n2']"),
        ("suite=paper scale.gpus_per_trial=0.3", "must be a whole number or one of"),
    ],
)
def test_bad_suites_fields_and_resources_are_refused(overrides, message):
    with pytest.raises(CommandError) as err:
        check(f"python -m orchestration.ablate {overrides}", {})
    assert message in str(err.value)


def test_a_good_local_command_passes_with_an_absolute_python():
    checked = check("/opt/venv/bin/python -m orchestration.ablate suite=smoke arms=[trm] seeds=2")
    assert checked.arms == ("trm",) and checked.trials == 2
    assert checked.config["storage"]["datasets"] is None  # the embedded default


def test_the_callers_environment_does_not_leak_into_the_check(monkeypatch):
    monkeypatch.setenv("TRM_DATASET_STORE", "s3://somewhere/datasets")
    with pytest.raises(CommandError, match="TRM_DATASET_STORE"):
        check("python -m orchestration.ablate suite=paper storage=s3", {})
    assert __import__("os").environ["TRM_DATASET_STORE"] == "s3://somewhere/datasets"


def test_the_command_line_tool_summarises_or_explains(monkeypatch, capsys):
    from orchestration.command import main

    for name, value in {
        "TRM_DATASET_STORE": "s3://b/datasets",
        "TRM_RESULTS_URI": "s3://b/ray_results",
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "RAY_ADDRESS": "10.0.0.2:6379",
    }.items():
        monkeypatch.setenv(name, value)
    command = "python -m orchestration.ablate suite=paper scale=paper storage=s3 tracking=server"
    assert main([f"{command} cluster=address"]) == 0
    out = capsys.readouterr().out
    assert "9 arm(s) x 3 seed(s) = 27 trials, 1 GPU per trial" in out
    assert "results s3://b/ray_results" in out and "ray 10.0.0.2:6379" in out
    assert main([f"{command} arms=[nope]"]) == 2
    assert "has no arm 'nope'" in capsys.readouterr().err
