"""Check an `orchestration.ablate` command line without running anything.

    python -m orchestration.command "python -m orchestration.ablate suite=paper scale=paper \\
        storage=s3 tracking=server cluster=address"

Used before a command is handed to a cluster (a RayJob's entrypoint, `ray job submit`), where a
typo would otherwise surface only after the cluster has started. The check parses the line
with shlex, composes the project's Hydra config with its overrides under a given environment
(the variables the cluster sets), resolves every interpolation, and validates the suite: the
arms asked for exist, every arm resolves to valid model/train configs and changes only the
axes it declares, the GPU share is allowed and the scale has data settings for the suite's task.

What it cannot check without building the dataset: the exact number of puzzle ids (ARC's
puzzle-embedding table is sized by the data); it validates with the token layout the scale's
data settings give (datasets/tasks/: `scale=mini` builds 6×6 Sudoku) and one puzzle id, which
changes no ablation axis.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestration.preflight import missing_variable

CONF_DIR = Path(__file__).resolve().parent / "conf"
MODULE = "orchestration.ablate"
ENV_REFERENCE = re.compile(r"oc\.env:([A-Za-z_][A-Za-z0-9_]*)")
# What a suite on a cluster runs with: datasets and Tune state on S3, an MLflow server, and the
# Ray cluster it was submitted to (the job's RAY_ADDRESS).
CLUSTER_GROUPS = ("storage=s3", "tracking=server", "cluster=address")
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class CommandError(ValueError):
    """The command would not run the suite it names (reported before anything starts)."""


@dataclass(frozen=True)
class CheckedCommand:
    overrides: tuple[str, ...]
    config: dict[str, Any]  # composed and resolved, as ablate's main() sees it
    suite: str
    kind: str  # grid | search
    task: str
    arms: tuple[str, ...]
    seeds: int
    trials: int  # arms x seeds for a grid; the search's samples for a search
    shapes: dict[str, dict[str, int]]  # task → the model fields its data fixes (from its layout)


def parse(command: str) -> tuple[str, ...]:
    """The Hydra overrides of `python -m orchestration.ablate OVERRIDES...`."""
    try:
        words = shlex.split(command)
    except ValueError as err:
        raise CommandError(f"cannot split {command!r}: {err}") from None
    if (
        len(words) < 3
        or Path(words[0]).name not in ("python", "python3")
        or words[1:3]
        != [
            "-m",
            MODULE,
        ]
    ):
        raise CommandError(f"expected `python -m {MODULE} key=value ...`, got {command!r}")
    overrides = tuple(words[3:])
    options = [w for w in overrides if w.startswith("-")]
    if options:  # --cfg, --help, -m (multirun) ... print or sweep instead of running the suite
        raise CommandError(f"options {options} would not run a suite; give key=value overrides")
    bad = [w for w in overrides if "=" not in w]
    if bad:
        raise CommandError(f"overrides must be key=value, got {bad}")
    return overrides


def entrypoint(suite: str = "paper", scale: str = "paper", *overrides: str) -> str:
    """The command a cluster runs for `suite` at `scale` (the cluster groups added, then any
    further `overrides`): the one place the RayJob manifests' entrypoints
    (infra/k8s, checked by tests/infra/test_entrypoint.py) and the Jobs-API submission that
    tests/orchestration/test_cluster.py runs on a real cluster come from.

        entrypoint()  # 'python -m orchestration.ablate suite=paper scale=paper storage=s3 ...'
    """
    for what, value in (("suite", suite), ("scale", scale)):
        if not isinstance(value, str) or not NAME.match(value):
            raise CommandError(
                f"{what} must be a name (letters, digits, '_', '.', '-'), got {value!r}"
            )
    line = shlex.join(["python", "-m", MODULE, f"suite={suite}", f"scale={scale}",
                       *CLUSTER_GROUPS, *overrides])  # fmt: skip
    parse(line)  # overrides must be key=value words
    return line


def environment_names() -> set[str]:
    """Environment variables the project's config reads (`${oc.env:NAME...}`)."""
    names: set[str] = set()
    for path in CONF_DIR.rglob("*.yaml"):
        names.update(ENV_REFERENCE.findall(path.read_text()))
    return names


@contextlib.contextmanager
def _environment(values: Mapping[str, str], clear: set[str]) -> Iterator[None]:
    """Exactly `values` for the names in `clear` (others removed), restored afterwards."""
    values = dict(values)  # a copy: `values` may be os.environ itself
    names = set(values) | clear
    saved = {name: os.environ.get(name) for name in names}
    for name in clear:
        os.environ.pop(name, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def compose(overrides: tuple[str, ...] | list[str], env: Mapping[str, str]) -> dict[str, Any]:
    """The resolved config of `ablate` with these overrides, reading only `env` for the
    variables the config refers to (not whatever the calling process happens to have)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    import orchestration.ablate  # noqa: F401  (registers field_overrides and resolvers)

    try:
        with (
            _environment(env, environment_names()),
            initialize_config_dir(str(CONF_DIR), version_base=None),
        ):
            cfg = hydra_compose("config", overrides=list(overrides))
            return OmegaConf.to_container(cfg, resolve=True)
    except Exception as err:  # hydra and omegaconf raise several types; all mean "bad command"
        missing = missing_variable(err)
        if missing:
            raise CommandError(
                f"the command reads ${missing} (from its storage, tracking or cluster group), "
                "which this environment does not set. The cluster sets it; to check the "
                f"command here, set it as the cluster will, e.g. `{missing}=... python -m "
                'orchestration.command "..."`'
            ) from None
        raise CommandError(f"{type(err).__name__}: {err}") from None


def check(command: str, env: Mapping[str, str] | None = None) -> CheckedCommand:
    """Parse, compose and validate an ablate command as it would run under `env`: the same
    checks as `ablate.plan`, with the task's token layout standing in for its dataset."""
    from orchestration.ablate import read_request
    from orchestration.tasks import shape_without_data

    overrides = parse(command)
    cfg = compose(overrides, env or {})
    try:
        request = read_request(cfg)
        shapes = {
            task: shape_without_data(task, request.data_arguments.get(task))
            for task in request.suite.tasks
        }
        request.validate(shapes)
    except CommandError:
        raise
    except ValueError as err:  # unknown suite or arm, GPU share, data settings, field values
        raise CommandError(str(err)) from None
    suite = request.suite
    trials = (
        suite.search["num_samples"] if suite.kind == "search" else len(request.arms) * request.seeds
    )
    return CheckedCommand(
        overrides,
        cfg,
        suite.name,
        suite.kind,
        suite.task,
        request.arms,
        request.seeds,
        trials,
        shapes,
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if args and args[0] in ("-h", "--help") else 2
    try:
        checked = check(args[0], os.environ)
    except CommandError as err:
        print(f"command: error: {err}", file=sys.stderr)
        return 2
    cfg, scale = checked.config, checked.config["scale"]
    if checked.kind == "search":
        trials = f"{checked.trials} search trials around {checked.arms[0]}"
    else:
        trials = f"{len(checked.arms)} arm(s) x {checked.seeds} seed(s) = {checked.trials} trials"
    print(
        f"ok: suite {checked.suite} (task {checked.task}), scale {scale['name']}, {trials}, "
        f"{scale['gpus_per_trial'] or 0} GPU per trial\n"
        f"    datasets {cfg['storage']['datasets'] or '.trm/datasets'}, "
        f"results {cfg['storage']['results'] or '.trm/ray_results'}, "
        f"tracking {cfg['tracking']['uri'] or 'sqlite (.trm/mlflow.db)'}, "
        f"ray {cfg['cluster']['address'] or 'local'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
