"""No manifest holds a credential: no Secret objects, no key-, password- or token-like literal
in any env value, argument or ConfigMap, no password inside a URI; every credential a pod
needs comes from a Secret reference, and the Secrets referenced are the documented ones."""

import copy
import re
from typing import Any

import pytest

from tests.infra.manifests import INFRA, OVERLAYS, SECRETS, containers, one, render

SENSITIVE_NAME = re.compile(
    r"(PASSWORD|PASSWD|SECRET|TOKEN|ACCESS_KEY|API_KEY|PRIVATE_KEY|CREDENTIAL)", re.IGNORECASE
)
REFERENCE = re.compile(r"\$\([A-Za-z_][A-Za-z0-9_]*\)")  # Kubernetes $(VAR) expansion
# 32+ characters of a key's alphabet with letters and digits (AWS secret keys, hex tokens),
# and not a path
KEY_LIKE = re.compile(
    r"(?<![A-Za-z0-9/+_.-])(?=[^/])(?=[A-Za-z0-9/+_-]*[0-9])(?=[A-Za-z0-9/+_-]*[A-Za-z])"
    r"[A-Za-z0-9/+_-]{32,}={0,2}(?![A-Za-z0-9/+_.-])"
)
URI_USERINFO = re.compile(r"[a-z][a-z0-9+.-]*://([^:/@\s]*):([^@/\s]+)@", re.IGNORECASE)
LITERALS = [
    (re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"), "an AWS access key id"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
    (re.compile(r"(?i)(password|passwd|secret|token)\s*[=:]\s*[^\s$]"), "an inline secret"),
    (KEY_LIKE, "a long key-like string"),
]  # fmt: skip


def _strings(node: Any, path: str = "") -> list[tuple[str, str]]:
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in _strings(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [s for i, v in enumerate(node) for s in _strings(v, f"{path}[{i}]")]
    return [(path, node)] if isinstance(node, str) else []


def credential_findings(docs: list[dict[str, Any]]) -> list[str]:
    """Everything in rendered manifests that looks like a committed credential."""
    found = []
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "Secret":
            found.append(f"{name}: a Secret object (create Secrets by hand, never commit them)")
        if doc["kind"] == "ConfigMap":
            for key in doc.get("data") or {}:
                if SENSITIVE_NAME.search(key):
                    found.append(f"{name}: ConfigMap key {key} holds a credential")
        for where, container in containers(doc):
            for item in container.get("env") or []:
                if "value" in item and SENSITIVE_NAME.search(item["name"]):
                    found.append(f"{where}: env {item['name']} is a literal, not a secretKeyRef")
        for path, text in _strings(doc):
            for match in URI_USERINFO.finditer(text):
                if not REFERENCE.fullmatch(match[2]):
                    found.append(f"{name}{path}: a password inside a URI")
            for pattern, what in LITERALS:
                if pattern.search(REFERENCE.sub("", text)):
                    found.append(f"{name}{path}: {what}")
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_rendered_manifest_holds_a_credential(overlay):
    assert credential_findings(render(overlay)) == []


@pytest.mark.parametrize(
    "plant, expected",
    [
        (lambda d: d.append({"kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "dg=="}}),
         "a Secret object"),
        (lambda d: _settings(d).update({"AWS_SECRET_ACCESS_KEY": "x"}), "ConfigMap key"),
        (lambda d: _env(d).append({"name": "POSTGRES_PASSWORD", "value": "hunter2"}),
         "is a literal"),
        (lambda d: _env(d).append({"name": "DB", "value": "postgresql://u:hunter2@db/x"}),
         "a password inside a URI"),
        (lambda d: _mlflow(d)["args"].append("--key=AKIAABCDEFGHIJKLMNOP"), "an AWS access key"),
        (lambda d: _mlflow(d)["args"].append("--db-password=hunter2"), "an inline secret"),
        (lambda d: _settings(d).update({"NOTE": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}),
         "a long key-like string"),
    ],
)  # fmt: skip
def test_the_scan_finds_planted_credentials(plant, expected):
    docs = copy.deepcopy(render("gpu"))
    plant(docs)
    findings = credential_findings(docs)
    assert any(expected in f for f in findings), findings


def _settings(docs):
    return one(docs, "ConfigMap", "trm-settings")["data"]


def _mlflow(docs):
    return one(docs, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]


def _env(docs):
    return _mlflow(docs)["env"]


def _secret_sources(container):
    refs = {s["secretRef"]["name"] for s in container.get("envFrom") or [] if "secretRef" in s}
    keys = {
        (i["valueFrom"]["secretKeyRef"]["name"], i["valueFrom"]["secretKeyRef"]["key"], i["name"])
        for i in container.get("env") or []
        if "secretKeyRef" in i.get("valueFrom", {})
    }
    return refs, keys


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_credentials_come_from_the_documented_secrets(overlay):
    docs = render(overlay)
    for where, container in [c for doc in docs for c in containers(doc)]:
        refs, keys = _secret_sources(container)
        assert refs <= set(SECRETS), where
        for secret, key, _ in keys:
            assert key in SECRETS.get(secret, ()), f"{where}: {secret}/{key} is not documented"
    # S3 for MLflow's artifacts and for every Ray pod; the database password for both users
    mlflow_refs, mlflow_keys = _secret_sources(_mlflow(docs))
    assert "trm-s3" in mlflow_refs
    assert ("trm-postgres", "password", "POSTGRES_PASSWORD") in mlflow_keys
    postgres = one(docs, "StatefulSet", "postgres")["spec"]["template"]["spec"]["containers"][0]
    assert ("trm-postgres", "password", "POSTGRES_PASSWORD") in _secret_sources(postgres)[1]
    for doc in docs:
        if doc["kind"] in ("RayJob", "RayCluster"):
            for where, container in containers(doc):
                if "ray-head" in where or "ray-worker" in where:
                    assert "trm-s3" in _secret_sources(container)[0], where


def test_the_backend_store_uri_is_composed_from_the_secret_at_start():
    env = {e["name"]: e for e in _env(render("gpu"))}
    uri = env["MLFLOW_BACKEND_STORE_URI"]["value"]
    assert uri.startswith("postgresql://$(POSTGRES_USER):$(POSTGRES_PASSWORD)@")
    names = list(env)  # $(VAR) expands only variables defined earlier in the list
    for variable in REFERENCE.findall(uri):
        assert names.index(variable[2:-1]) < names.index("MLFLOW_BACKEND_STORE_URI")
    assert not any("backend-store-uri" in a for a in _mlflow(render("gpu"))["args"])


def test_the_secrets_are_documented_with_create_commands():
    text = (INFRA / "README.md").read_text().replace("\\\n", " ")  # join continued lines
    for secret, keys in SECRETS.items():
        commands = [
            line for line in text.splitlines() if f"create secret generic {secret} " in line
        ]
        assert len(commands) == 1, f"infra/README.md: `kubectl create secret generic {secret}`"
        for key in keys:
            assert f"--from-literal={key}=" in commands[0], (secret, key)
