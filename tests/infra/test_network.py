"""How the pieces reach each other: the network policies deny ingress by default and let
through only what a suite needs, and the MLflow server accepts the Host header that the
in-cluster clients and a port-forward send (MLflow 3's DNS-rebinding protection)."""

from urllib.parse import urlparse

import pytest

from tests.infra.manifests import OVERLAYS, container_env, one, pod_labels, render


def _policies(docs):
    return [d for d in docs if d["kind"] == "NetworkPolicy"]


def _selects(selector, labels):
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _allowed(docs, source_labels, target_labels, port):
    """Whether a pod with source_labels (same namespace) may open `port` on the target."""
    for policy in _policies(docs):
        spec = policy["spec"]
        if not _selects(spec["podSelector"], target_labels):
            continue
        for rule in spec.get("ingress") or []:
            peers = rule.get("from")
            ports = [p["port"] for p in rule.get("ports") or []]
            if ports and port not in ports:
                continue
            if peers is None or any(
                "namespaceSelector" not in peer and _selects(peer["podSelector"], source_labels)
                for peer in peers
            ):
                return True
    return False


def _labels(docs, prefix):
    found = [
        labels
        for where, labels in (x for d in docs for x in pod_labels(d))
        if where.startswith(prefix)
    ]
    assert found, prefix
    return found[0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_is_denied_unless_allowed(overlay):
    docs = render(overlay)
    deny = one(docs, "NetworkPolicy", "default-deny-ingress")["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"]
    assert "ingress" not in deny
    for doc in docs:
        for where, labels in pod_labels(doc):
            assert labels.get("app.kubernetes.io/component"), f"{where}: no component label"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_is_reachable_only_by_its_clients(overlay):
    docs = render(overlay)
    ray = _labels(docs, "Ray")
    mlflow = _labels(docs, "Deployment/mlflow")
    postgres = _labels(docs, "StatefulSet/postgres")
    stranger = {"app.kubernetes.io/component": "something-else"}
    assert _allowed(docs, ray, mlflow, 5000)
    assert not _allowed(docs, stranger, mlflow, 5000)
    assert _allowed(docs, mlflow, postgres, 5432)
    assert not _allowed(docs, ray, postgres, 5432)
    for port in (6379, 8265, 10001, 12345):  # GCS, dashboard/jobs, client, any worker port
        assert _allowed(docs, ray, ray, port)
    assert not _allowed(docs, stranger, ray, 6379)
    if overlay != "gpu-cluster":  # the RayJob's submitter reaches the head's job API only
        submitter = _labels(docs, "RayJob/trm-suite submitter")
        assert _allowed(docs, submitter, ray, 8265)
        assert not _allowed(docs, submitter, ray, 6379)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # importing mlflow's server
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mlflow_accepts_the_hosts_its_clients_send(overlay):
    from mlflow.server.security_utils import is_allowed_host_header

    docs = render(overlay)
    container = one(docs, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]
    (option,) = [a for a in container["args"] if a.startswith("--allowed-hosts=")]
    allowed = option.split("=", 1)[1].split(",")
    tracking = urlparse(
        container_env({"envFrom": [{"configMapRef": {"name": "trm-settings"}}]}, docs)[
            "MLFLOW_TRACKING_URI"
        ]
    )
    namespace = one(docs, "Deployment", "mlflow")["metadata"]["namespace"]
    for host in (
        tracking.netloc,  # in-cluster clients, as configured
        f"mlflow.{namespace}.svc.cluster.local:5000",
        "localhost:5000",  # kubectl port-forward
        "127.0.0.1:5000",
    ):
        assert is_allowed_host_header(allowed, host), host
    assert not is_allowed_host_header(allowed, "evil.example.com")
    assert "*" not in allowed
    port = container["ports"][0]["containerPort"]
    assert f"--port={port}" in container["args"]
    assert one(docs, "Service", "mlflow")["spec"]["ports"][0]["port"] == tracking.port
