"""infra/k8s: every overlay renders offline with kustomize, and what it renders is what a suite
needs: a RayJob (or a long-lived RayCluster) with a CPU-only head and autoscaled workers, the
MLflow server with Postgres, resource requests and limits on every container, non-root pods."""

import pytest

from tests.infra.manifests import (
    NAMESPACE,
    OVERLAYS,
    PROJECT_IMAGE,
    containers,
    one,
    pinned,
    pod_specs,
    ray_cluster_spec,
    render,
)

EXPECTED = {
    "gpu": {"RayJob"},
    "gpu-arc": {"RayJob"},
    "cpu-mini": {"RayJob"},
    "gpu-cluster": {"RayCluster"},
}
SHARED = {"Namespace", "ConfigMap", "Deployment", "Service", "StatefulSet", "NetworkPolicy"}


def test_the_overlays_are_the_documented_ones():
    assert set(OVERLAYS) == set(EXPECTED)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_the_services_and_its_ray_side(overlay):
    docs = render(overlay)
    kinds = {d["kind"] for d in docs}
    assert kinds == SHARED | EXPECTED[overlay]
    one(docs, "Deployment", "mlflow")
    one(docs, "StatefulSet", "postgres")
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names)), "an object is rendered twice"
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_cpu_and_memory_requests_and_limits(overlay):
    checked = 0
    for doc in render(overlay):
        for where, container in containers(doc):
            resources = container.get("resources") or {}
            for bound in ("requests", "limits"):
                values = resources.get(bound) or {}
                assert {"cpu", "memory"} <= set(values), f"{where}: {bound} {values}"
            checked += 1
    assert checked >= 5  # mlflow, postgres, ray head, a worker group, autoscaler (+ submitter)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_as_non_root_without_privilege_escalation(overlay):
    for doc in render(overlay):
        for where, spec in pod_specs(doc):
            security = spec.get("securityContext") or {}
            assert security.get("runAsNonRoot") is True, where
            assert security.get("runAsUser", 0) != 0, where
            for container in spec["containers"]:
                context = container.get("securityContext") or {}
                assert context.get("allowPrivilegeEscalation") is False, where
                assert context.get("capabilities", {}).get("drop") == ["ALL"], where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_one_project_image_everywhere_but_the_database(overlay):
    images = {
        container["image"]
        for doc in render(overlay)
        for where, container in containers(doc)
        if "image" in container and not where.startswith("StatefulSet/postgres")
    }
    assert len(images) == 1, images
    (image,) = images
    assert PROJECT_IMAGE in image.rsplit("/", 1)[-1]
    assert ":" in image.rsplit("/", 1)[-1], f"{image} has no tag"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ray_cluster_head_is_cpu_free_and_workers_autoscale(overlay):
    docs = render(overlay)
    (doc,) = [d for d in docs if ray_cluster_spec(d) is not None]
    cluster = ray_cluster_spec(doc)
    assert cluster["rayVersion"] == pinned("ray")
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["authOptions"] == {"mode": "token"}
    (group,) = cluster["workerGroupSpecs"]
    assert group["maxReplicas"] > group["minReplicas"]
    if doc["kind"] == "RayJob":  # a suite always has a worker, without waiting for a scale-up
        assert group["minReplicas"] >= 1
        assert group["replicas"] >= group["minReplicas"]
    (worker,) = group["template"]["spec"]["containers"]
    gpus = worker["resources"]["limits"].get("nvidia.com/gpu")
    assert (gpus is not None) == overlay.startswith("gpu"), f"{overlay}: GPUs {gpus}"
    if gpus is not None:  # extended resources: requests must equal limits
        assert worker["resources"]["requests"]["nvidia.com/gpu"] == gpus


@pytest.mark.parametrize("overlay", ["gpu", "cpu-mini"])
def test_rayjob_cleans_up_and_retries(overlay):
    job = one(render(overlay), "RayJob")["spec"]
    assert job["shutdownAfterJobFinishes"] is True
    assert job["ttlSecondsAfterFinished"] > 0
    assert job["backoffLimit"] >= 1
    assert job["submissionMode"] == "K8sJobMode"
    assert "rayClusterSpec" in job and "clusterSelector" not in job  # its own cluster


def test_long_lived_cluster_matches_the_rayjob_cluster():
    """Two copies of one cluster shape (KubeRay cannot share it): only the worker counts may
    differ, so a suite behaves the same submitted either way."""
    job = ray_cluster_spec(one(render("gpu"), "RayJob"))
    cluster = one(render("gpu-cluster"), "RayCluster")["spec"]
    for group in (*job["workerGroupSpecs"], *cluster["workerGroupSpecs"]):
        for key in ("replicas", "minReplicas"):
            group.pop(key)
    assert job == cluster
