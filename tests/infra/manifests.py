"""Rendering and walking the Kubernetes manifests of infra/k8s (shared by the infra tests)."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
DOCKERFILE = INFRA / "docker" / "Dockerfile"
CRD_DIR = ROOT.parent / "shared" / "data" / "kuberay-crds"
NAMESPACE = "trm-lab"
PROJECT_IMAGE = "trm-lab"  # the image name the manifests use before an overlay retargets it
SECRETS = {
    "trm-s3": {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"},
    "trm-postgres": {"username", "password"},
}


@functools.cache
def _renderer() -> list[str] | None:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


@functools.cache
def _render(overlay: str) -> tuple[dict[str, Any], ...]:
    command = _renderer()
    if command is None:
        pytest.skip("neither kubectl nor kustomize is on PATH: cannot render infra/k8s overlays")
    out = subprocess.run(
        [*command, str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, f"{overlay} does not render:\n{out.stderr}"
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def render(overlay: str) -> list[dict[str, Any]]:
    """The overlay's objects as kustomize renders them (a fresh copy each call)."""
    import copy

    return copy.deepcopy(list(_render(overlay)))


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def ray_cluster_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc["kind"] == "RayCluster":
        return doc["spec"]
    if doc["kind"] == "RayJob":
        return doc["spec"].get("rayClusterSpec")
    return None


def pod_specs(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod spec) of every pod template an object holds, custom resources included."""
    where = f"{doc['kind']}/{doc['metadata']['name']}"
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        yield where, doc["spec"]["template"]["spec"]
    cluster = ray_cluster_spec(doc)
    if cluster is not None:
        yield f"{where} head", cluster["headGroupSpec"]["template"]["spec"]
        for group in cluster.get("workerGroupSpecs", []):
            yield f"{where} worker group {group['groupName']}", group["template"]["spec"]
    if doc["kind"] == "RayJob" and "submitterPodTemplate" in doc["spec"]:
        yield f"{where} submitter", doc["spec"]["submitterPodTemplate"]["spec"]


def pod_labels(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, str]]]:
    """(where, labels) of every pod template an object holds."""
    where = f"{doc['kind']}/{doc['metadata']['name']}"
    templates = []
    if doc["kind"] in ("Deployment", "StatefulSet"):
        templates.append((where, doc["spec"]["template"]))
    cluster = ray_cluster_spec(doc)
    if cluster is not None:
        templates.append((f"{where} head", cluster["headGroupSpec"]["template"]))
        for group in cluster.get("workerGroupSpecs", []):
            templates.append((f"{where} worker group {group['groupName']}", group["template"]))
    if doc["kind"] == "RayJob" and "submitterPodTemplate" in doc["spec"]:
        templates.append((f"{where} submitter", doc["spec"]["submitterPodTemplate"]))
    for name, template in templates:
        yield name, (template.get("metadata") or {}).get("labels") or {}


def containers(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, container) for every container, init container and KubeRay autoscaler."""
    for where, spec in pod_specs(doc):
        for key in ("initContainers", "containers"):
            for container in spec.get(key) or []:
                yield f"{where} {container['name']}", container
    cluster = ray_cluster_spec(doc)
    if cluster is not None and cluster.get("enableInTreeAutoscaling"):
        options = cluster.get("autoscalerOptions") or {}
        yield f"{doc['kind']}/{doc['metadata']['name']} autoscaler", options


def container_env(
    container: dict[str, Any], docs: list[dict[str, Any]], secret_value: str = "x"
) -> dict[str, str]:
    """The variables a container starts with: ConfigMap references resolved from the rendered
    ConfigMaps, Secret references filled with `secret_value` (Secrets are never rendered)."""
    maps = {d["metadata"]["name"]: d.get("data") or {} for d in docs if d["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            env.update(maps[source["configMapRef"]["name"]])
        elif "secretRef" in source:
            env.update(dict.fromkeys(SECRETS[source["secretRef"]["name"]], secret_value))
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = _expand(item["value"], env)
        elif "configMapKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["configMapKeyRef"]
            if ref["key"] in maps[ref["name"]]:
                env[item["name"]] = maps[ref["name"]][ref["key"]]
            else:
                assert ref.get("optional"), f"{ref} names a missing key and is not optional"
        elif "secretKeyRef" in item.get("valueFrom", {}):
            env[item["name"]] = secret_value
    return env


def _expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), value)


@functools.cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pinned(package: str) -> str:
    """The exact version pyproject.toml pins for a dependency (`name[extras]==version`)."""
    from packaging.requirements import Requirement

    for line in pyproject()["project"]["dependencies"]:
        requirement = Requirement(line)
        if requirement.name == package:
            specs = list(requirement.specifier)
            assert len(specs) == 1 and specs[0].operator == "==", f"{line} is not an exact pin"
            return specs[0].version
    raise AssertionError(f"{package} is not a dependency in pyproject.toml")


def dependency_extras(package: str) -> set[str]:
    from packaging.requirements import Requirement

    for line in pyproject()["project"]["dependencies"]:
        requirement = Requirement(line)
        if requirement.name == package:
            return set(requirement.extras)
    raise AssertionError(f"{package} is not a dependency in pyproject.toml")


@functools.cache
def crd_schema(kind: str) -> dict[str, Any]:
    """The openAPIV3Schema of a KubeRay CRD (ray.io/v1), made strict: an object that lists its
    properties accepts no others, as the API server would silently prune them."""
    path = CRD_DIR / f"ray.io_{kind.lower()}s.yaml"
    if not path.exists():
        pytest.skip(f"KubeRay CRDs not found at {CRD_DIR} (shared/data is absent in a fresh clone)")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(path.read_text(), Loader=loader)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return _strict(version["schema"]["openAPIV3Schema"])


def _strict(schema: Any) -> Any:
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema
