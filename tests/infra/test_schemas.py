"""infra/k8s against schemas, offline: core kinds strictly with kubernetes-validate (unknown
fields are errors), RayJob and RayCluster with the KubeRay CRDs' openAPIV3Schema made strict
the same way (the API server would silently drop a misspelt field of a custom resource).
CEL rules of the CRDs (x-kubernetes-validations) are not evaluated here."""

import copy

import jsonschema
import pytest

from tests.infra.manifests import OVERLAYS, crd_schema, one, render

KUBERNETES_VERSION = "1.32"  # the oldest release the manifests are meant for
CUSTOM = {"RayJob", "RayCluster"}


def _kubernetes_validate():
    return pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is a dev dependency (pyproject.toml)"
    )


def _crd_errors(doc):
    validator = jsonschema.Draft202012Validator(crd_schema(doc["kind"]))
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_objects_validate_strictly(overlay):
    kv = _kubernetes_validate()
    core = [d for d in render(overlay) if d["kind"] not in CUSTOM]
    assert len(core) >= 8
    for doc in core:
        try:
            kv.validate(doc, KUBERNETES_VERSION, strict=True)
        except kv.ValidationError as err:
            path = ".".join(map(str, err.path))
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {err.message}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ray_objects_validate_against_the_kuberay_crds(overlay):
    custom = [d for d in render(overlay) if d["kind"] in CUSTOM]
    assert len(custom) == 1
    for doc in custom:
        assert doc["apiVersion"] == "ray.io/v1"
        assert _crd_errors(doc) == [], doc["kind"]


def test_strict_core_validation_catches_an_unknown_field():
    kv = _kubernetes_validate()
    deployment = copy.deepcopy(one(render("gpu"), "Deployment", "mlflow"))
    deployment["spec"]["template"]["spec"]["containers"][0]["resource"] = {}  # typo
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s["rayClusterSpec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
         "is not of type 'string'"),
        (lambda s: s.update({"shutdownAfterJobFinish": True}), "Additional properties"),
        (lambda s: s["rayClusterSpec"].update({"enableInTreeAutoScaling": True}),
         "Additional properties"),
        (lambda s: s["rayClusterSpec"]["workerGroupSpecs"][0].pop("maxReplicas"),
         "'maxReplicas' is a required property"),
    ],
)  # fmt: skip
def test_crd_validation_catches_mistakes(change, message):
    job = copy.deepcopy(one(render("gpu"), "RayJob"))
    change(job["spec"])
    errors = _crd_errors(job)
    assert any(message in e for e in errors), errors
