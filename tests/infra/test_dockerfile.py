"""infra/docker/Dockerfile, read statically (no image can be built here): it installs the torch
and Ray that pyproject.toml pins (Ray must equal the cluster's rayVersion), runs as a non-root
user whose uid the manifests use, switches base image and torch index with VARIANT=cpu, brings
the Postgres driver for the MLflow server, and copies every package pyproject.toml installs."""

import re
import shlex

import pytest

from tests.infra.manifests import DOCKERFILE, OVERLAYS, pinned, pod_specs, pyproject, render


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines = [
        line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")
    ]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    return [
        (word.upper(), rest.strip())
        for word, _, rest in (line.strip().partition(" ") for line in text.splitlines())
        if word
    ]


def _stages() -> dict[str, list[tuple[str, str]]]:
    stages, name = {"(global)": []}, "(global)"
    for instruction, args in _instructions():
        if instruction == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else "(final)"
            stages[name] = []
        stages[name].append((instruction, args))
    return stages


def _args(stage: list[tuple[str, str]]) -> dict[str, str]:
    return dict(a.split("=", 1) for i, a in stage if i == "ARG" and "=" in a)


def _resolve(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: values.get(m[1], m[0]), text)


def _final():
    stages = _stages()
    assert "(final)" in stages, "the last FROM must be the unnamed final stage"
    return stages["(final)"], {**_args(stages["(global)"]), **_args(stages["(final)"])}


def test_torch_and_ray_are_pinned_as_in_pyproject():
    stage, values = _final()
    assert values["TORCH_VERSION"] == pinned("torch")
    assert values["RAY_VERSION"] == pinned("ray")
    runs = " ".join(a for i, a in stage if i == "RUN")
    assert '--index-url "$TORCH_INDEX_URL" "torch==${TORCH_VERSION}"' in runs
    ray = re.search(r'"ray\[([a-z,]+)\]==\$\{RAY_VERSION\}"', runs)
    assert ray, "ray must be installed at ${RAY_VERSION}"
    from tests.infra.manifests import dependency_extras

    assert set(ray[1].split(",")) == dependency_extras("ray")


def test_the_manifests_declare_the_image_ray_version():
    ray = pinned("ray")
    for overlay in OVERLAYS:
        for doc in render(overlay):
            cluster = doc["spec"].get("rayClusterSpec") if doc["kind"] == "RayJob" else None
            cluster = doc["spec"] if doc["kind"] == "RayCluster" else cluster
            if cluster is not None:
                assert cluster["rayVersion"] == ray, overlay


def test_the_image_runs_as_a_non_root_user_the_manifests_share():
    stage, values = _final()
    users = [_resolve(a, values) for i, a in stage if i == "USER"]
    assert users, "no USER: the image would run as root"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and int(user) > 0, users[-1]  # numeric: runAsNonRoot can verify it
    assert group.isdigit() and int(group) > 0, users[-1]
    for overlay in OVERLAYS:
        for doc in render(overlay):
            for where, spec in pod_specs(doc):
                if where.startswith("StatefulSet/postgres"):
                    continue  # the database image has its own user
                assert spec["securityContext"]["runAsUser"] == int(user), (overlay, where)


@pytest.mark.parametrize("variant", ["cuda", "cpu"])
def test_variant_switches_base_image_and_torch_index(variant):
    stages = _stages()
    global_args = _args(stages["(global)"])
    assert global_args["VARIANT"] == "cuda"  # CUDA unless asked otherwise
    (final_from,) = [a for i, a in stages["(final)"] if i == "FROM"]
    assert final_from == "base-${VARIANT}"
    stage = stages[f"base-{variant}"]
    (base,) = [_resolve(a.split()[0], global_args) for i, a in stage if i == "FROM"]
    index = dict(shlex.split(a)[0].split("=", 1) for i, a in stage if i == "ENV")
    if variant == "cuda":
        assert base.startswith("nvidia/cuda:") and "ubuntu" in base
        assert "download.pytorch.org/whl/cpu" not in index["TORCH_INDEX_URL"]
    else:
        assert not base.startswith("nvidia/")
        assert index["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"


def test_the_mlflow_server_can_reach_postgres():
    stage, values = _final()
    runs = " ".join(a for i, a in stage if i == "RUN")
    assert re.search(r'"psycopg2-binary==\$\{PSYCOPG2_VERSION\}"', runs)
    assert re.fullmatch(r"\d+\.\d+\.\d+", values["PSYCOPG2_VERSION"])


def test_every_package_pyproject_installs_is_copied_and_nothing_else_is_sent():
    packages = {
        p.rstrip("*") for p in pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    stage, _ = _final()
    copied = {a.split()[0] for i, a in stage if i == "COPY"}
    assert packages <= copied
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    rules = [r.strip() for r in ignore if r.strip() and not r.startswith("#")]
    assert rules[0] == "*", "exclude everything first (.venv, .trm and .git are gigabytes)"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert allowed == packages | {"pyproject.toml", "README.md"}
