"""Run a suite of ablations as Ray Tune trials, one per (arm, seed), tracked in MLflow.

    python -m orchestration.ablate suite=paper scale=mini
    python -m orchestration.ablate suite=smoke scale=smoke arms=[trm] seeds=1 model.hidden=48
    python -m orchestration.ablate suite=paper storage=s3 tracking=server cluster=address
    python -m orchestration.ablate suite=paper scale=mini seeds=auto   # seeds in rounds
    python -m orchestration.ablate --help        # groups: scale, storage, tracking, cluster
    python -m orchestration.ablate suite=paper --cfg job   # the composed config

With nothing configured everything runs here: local Ray, datasets and Ray results under .trm/,
MLflow in .trm/mlflow.db. The same command after a crash resumes the suite from its checkpoints
(finished trials are not rerun); `resume=false` starts afresh. `seeds=auto` runs the seeds in
rounds (`seeds_auto`: first, add, max): after each round, more seeds only for the arms whose
verdicts (orchestration/verdicts.py) are still undecided, in the same execution.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

# Set before Ray is imported (STACK.md): no auth for local clusters, no usage stats, no chdir.
for _key, _value in {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_CHDIR_TO_TRIAL_DIR": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    # checkpoints at every evaluation are intended; do not warn about syncs
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}.items():
    os.environ.setdefault(_key, _value)

import hydra  # noqa: E402
from hydra.core.config_store import ConfigStore  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from orchestration.driver_lock import one_driver  # noqa: E402
from orchestration.outage import ServiceWatch, StopOnOutage  # noqa: E402
from orchestration.preflight import (  # noqa: E402
    CONNECT_TIMEOUT_S,
    check_services,
    check_values,
    missing_variable,
    service_probes,
)
from orchestration.provenance import CodeIdentity, code_identity, run_tags  # noqa: E402
from orchestration.ray_session import (  # noqa: E402
    keep_on_loopback,
    ray_temp_dir,
    sweep_stale_sessions,
)
from orchestration.resources import auto_gpu_shares, check_gpus_per_trial  # noqa: E402
from orchestration.resume import resumable  # noqa: E402
from orchestration.suite import (  # noqa: E402
    FIELDS,
    Resolution,
    Suite,
    available_suites,
    describe_values,
    load_suite,
)
from orchestration.tasks import task_shape  # noqa: E402
from orchestration.tracking import (  # noqa: E402
    INTERRUPTED_TAG,
    STOPPED_EARLY_TAG,
    Tracker,
    axis_tags,
    default_artifact_location,
    default_tracking_uri,
)
from orchestration.trial_spec import Budget, DatasetRef, Tracking, TrialSpec  # noqa: E402
from trm_core.config import ModelConfig, TrainConfig  # noqa: E402
from trm_core.flops import supervision_step_flops  # noqa: E402

# `model.<field>=value` / `train.<field>=value` on the command line: every field is a known
# key (null = not overridden), so a typo is refused by Hydra with the key it did not know.
ConfigStore.instance().store(
    name="field_overrides",
    node={
        "model": {f.name: None for f in dataclasses.fields(ModelConfig)},
        "train": {f.name: None for f in dataclasses.fields(TrainConfig) if f.name != "seed"},
    },
)


OmegaConf.register_new_resolver("trm_suites", lambda: ", ".join(available_suites()), replace=True)


class SuiteError(ValueError):
    """A bad suite, arm, field or resource request: reported before anything is launched."""


def _absolute(path: str | None, default: Path) -> str:
    if path is None:
        return str(default.resolve())
    return path if "://" in path else str(Path(path).resolve())


def ensure_dataset(task: str, arguments: dict[str, Any], store_uri: str, base: Path):
    """(dataset id, manifest) of the suite's data for `task`, built once per store: the store
    remembers each build request by what decides its bytes (builder version, arguments, source
    identity), so a retry on a fresh cluster reuses it, a fixed builder builds anew, and a
    damaged copy is rebuilt (datasets.build.ensure). A scale may name another builder."""
    from datasets.build import ensure
    from datasets.store import DatasetStore

    arguments = dict(arguments)
    builder = arguments.pop("builder", None) or task
    cache = base / ".trm" / "cache"
    ident = ensure(builder, arguments, store_uri, cache_dir=cache)
    return ident, DatasetStore(store_uri, cache_dir=cache / "datasets").manifest(ident)


@dataclasses.dataclass(frozen=True)
class Request:
    """What a command asks for, checked without data: the suite, its arms and seeds, the
    scale, the data settings per task of those arms and the command line's field overrides."""

    suite: Suite
    scale: dict[str, Any]
    arms: tuple[str, ...]
    seeds: int
    data_arguments: dict[str, dict[str, Any]]  # task → build arguments
    cli_model: dict[str, Any]
    cli_train: dict[str, Any]
    search_values: dict[str, Any] | None = None  # a search suite run as a grid at these values
    # seeds=auto: {"first", "add", "max"}; `seeds` is then `max` (every seed a round may run)
    seeds_auto: dict[str, int] | None = None

    @property
    def is_search(self) -> bool:
        return self.suite.kind == "search" and self.search_values is None

    def validate(self, task_shapes: dict[str, dict[str, int]]) -> None:
        """Every arm resolves to valid configs, changes only the axes it declares, and keeps
        its declared changes at this scale."""
        scale = self.scale
        self.suite.validate(
            task_shapes, scale["model"], scale["train"], scale.get("shrink"), self.arms
        )
        for arm in self.arms:
            self.resolution(arm, task_shapes[self.suite.task_of(arm)])

    def resolution(self, arm: str, shape: dict[str, int]) -> Resolution:
        """The arm as it runs: scale, shrink rule, command line and, for a search run as a
        grid, the chosen values (applied like a command-line override of a searched field)."""
        cli_model, cli_train = dict(self.cli_model), dict(self.cli_train)
        for key, value in (self.search_values or {}).items():
            group, _, name = key.partition(".")
            (cli_model if group == "model" else cli_train)[name] = value
        resolved = self.suite.resolution(arm, shape, self.scale, cli_model, cli_train)
        if self.search_values:  # named in the label as chosen values, not as overrides
            resolved = dataclasses.replace(
                resolved,
                label=f"{resolved.label} [{describe_values(self.search_values)}]",
                overridden={
                    k: v for k, v in resolved.overridden.items() if k not in self.search_values
                },
            )
        return resolved


def _check_scale_blocks(suite: Suite, scale: dict[str, Any], tasks: tuple[str, ...]) -> None:
    """A scale's `model:`/`train:` may not touch a field an arm owns; `shrink:` may name only
    fields (it is the declared rule for owned ones)."""
    owners = suite.owners(tasks)
    for group in ("model", "train"):
        for name in scale.get(group) or {}:
            field = f"{group}.{name}"
            # a searched field's scale value is only the baseline's; every sample replaces it
            if [arm for arm in owners.get(field, []) if arm != "search.space"]:
                raise SuiteError(
                    f"scale {scale['name']!r} sets {field}, which arms {owners[field]} of suite "
                    f"{suite.name!r} declare (in `axes` or `set`); a scale may change such a "
                    "field only through its `shrink:` block, which leaves the arms that declare "
                    "it alone and shows the change in the others' labels"
                )
    for field in scale.get("shrink") or {}:
        if field not in FIELDS:
            raise SuiteError(
                f"scale {scale['name']!r} shrink: {field!r} is not a model.* or train.* field"
            )


def _check_overrides(request: Request, allow_declared: bool) -> None:
    """A command-line override of a field an arm owns would change the arm while its label,
    tags and paper column stay: refused unless explicitly opted into."""
    owners = request.suite.owners(tuple(request.data_arguments))
    clashes = {
        f"{group}.{name}": owners[f"{group}.{name}"]
        for group, values in (("model", request.cli_model), ("train", request.cli_train))
        for name in values
        if f"{group}.{name}" in owners
    }
    searched = [k for k, v in clashes.items() if "search.space" in v]
    if searched:
        raise SuiteError(
            f"{searched} are searched by suite {request.suite.name!r}; a command-line value "
            "would be replaced by every sample. To run chosen values as a grid arm, pass "
            "search_values={field: value, ...}"
        )
    if clashes and not allow_declared:
        shown = "; ".join(f"{field} is declared by arms {arms}" for field, arms in clashes.items())
        raise SuiteError(
            f"override of a field the suite's arms declare: {shown} (and the baseline "
            f"{request.suite.baseline.name!r}'s value of it is what they are compared with). "
            "Their rows would no "
            "longer be what their labels and the paper column say. Drop the override, or pass "
            "override_declared=true to run it anyway (the labels then name the override and "
            "Δ paper is n/c)"
        )


def _search_values(suite: Suite, values: dict[str, Any] | None) -> dict[str, Any] | None:
    if not values:
        return None
    if suite.kind != "search":
        raise SuiteError(f"search_values is for search suites; suite {suite.name!r} is a grid")
    unknown = sorted(set(values) - set(suite.search["space"]))
    if unknown:
        raise SuiteError(
            f"search_values: {unknown} are not searched by suite {suite.name!r}; its space is "
            f"{sorted(suite.search['space'])}"
        )
    return dict(values)


SEEDS_AUTO_KEYS = ("first", "add", "max")


def _seeds_auto(raw: Any, default_first: int, suite: Suite, grid: bool) -> dict[str, int]:
    """The seeds=auto rule, {"first", "add", "max"}, with `first` filled in (null: the
    scale's or the suite's seed count), or a SuiteError naming the key and what is allowed."""
    if not grid:
        raise SuiteError(
            f"seeds=auto adds seeds to a grid's arms in rounds; suite {suite.name!r} is a "
            "search (one seed per sample). Give seeds=N, or search_values={...} to run chosen "
            "values as a grid arm (seeds=auto works there)"
        )
    raw = dict(raw or {})
    unknown = sorted(set(raw) - set(SEEDS_AUTO_KEYS))
    if unknown:
        raise SuiteError(f"seeds_auto: unknown key(s) {unknown}; allowed: {list(SEEDS_AUTO_KEYS)}")
    rule = {"first": raw.get("first"), "add": raw.get("add", 2), "max": raw.get("max", 10)}
    if rule["first"] is None:
        rule["first"] = default_first
    least = {"first": 1, "add": 1, "max": rule["first"]}
    meaning = {
        "first": "the seeds every arm runs in round 1 (null: the scale's or suite's count)",
        "add": "the seeds added per round to each arm still undecided",
        "max": f"the most seeds an arm gets, at least first ({rule['first']})",
    }
    for key in SEEDS_AUTO_KEYS:
        value = rule[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < least[key]:
            raise SuiteError(
                f"seeds_auto.{key}={value!r} is not allowed; it must be a whole number >= "
                f"{least[key]}: {meaning[key]}"
            )
    return rule


def read_request(cfg: dict[str, Any]) -> Request:
    """The composed config's request, or a SuiteError/ValueError naming what is wrong."""
    seeds = cfg.get("seeds")
    if isinstance(seeds, str):
        if seeds != "auto":
            raise SuiteError(
                f"seeds={seeds!r} is not allowed; give a whole number >= 1, null (the scale's "
                "or the suite's count) or auto (seeds added in rounds until the verdicts are "
                "decided; see seeds_auto)"
            )
        cfg = {**cfg, "seeds": None}  # the numbers are checked below, the rule on its own
    check_values(cfg)
    suite: Suite = load_suite(cfg["suite"])
    scale = cfg["scale"]
    search_values = _search_values(suite, cfg.get("search_values"))
    workers = scale.get("workers_per_trial", 1)
    if workers > 1 and suite.kind == "search" and search_values is None:
        # Tried on this machine: search_lr at scale=smoke with 2 workers hung after its
        # second trial (ASHA's stop meets Ray Train's controller inside the trial).
        raise SuiteError(
            f"suite {suite.name!r} is a search: scale.workers_per_trial={workers} is not "
            "supported for searches (an early-stopped worker-group trial hangs Tune); "
            "search with scale.workers_per_trial=1, then run the chosen values as a grid "
            "with workers (`search_values={...} scale.workers_per_trial=N`)"
        )
    # A search explores around the baseline; a grid runs every arm.
    default_arms = (
        [suite.baseline.name] if suite.kind == "search" else [a.name for a in suite.all_arms]
    )
    arms = tuple(cfg.get("arms") or default_arms)
    for name in arms:
        suite.arm(name)  # unknown arm → error listing the suite's arms
    try:
        check_gpus_per_trial(scale["gpus_per_trial"])
    except ValueError as err:
        raise SuiteError(str(err)) from None
    data = scale.get("data") or {}
    data_arguments = {}
    for task in dict.fromkeys(suite.task_of(a) for a in arms):
        if data.get(task) is None:
            raise SuiteError(
                f"scale {scale['name']!r} has no data settings for task {task!r}; "
                f"add scale.data.{task} (it has {sorted(data)})"
            )
        data_arguments[task] = {"seed": 0, **data[task]}
    _check_scale_blocks(suite, scale, tuple(data_arguments))
    count = int(cfg.get("seeds") or scale.get("seeds") or suite.seeds)
    auto = None
    if seeds == "auto":
        grid = suite.kind == "grid" or search_values is not None
        auto = _seeds_auto(cfg.get("seeds_auto"), count, suite, grid)
        count = auto["max"]  # the plan holds every seed a round may run
    request = Request(
        suite=suite,
        scale=scale,
        arms=arms,
        seeds=count,
        data_arguments=data_arguments,
        cli_model={k: v for k, v in (cfg.get("model") or {}).items() if v is not None},
        cli_train={k: v for k, v in (cfg.get("train") or {}).items() if v is not None},
        search_values=search_values,
        seeds_auto=auto,
    )
    _check_overrides(request, bool(cfg.get("override_declared")))
    return request


def trial_budget(
    scale: dict[str, Any], task: str, manifest: dict, batch: int, fraction: float = 1.0
) -> dict[str, int]:
    """Steps and evaluation interval of one trial. A scale gives `steps` and `eval_every`, or
    `epochs` per task and a number of `evaluations`: steps = epochs × groups × examples per
    puzzle / batch, as the official code counts them (TRM_SPEC §2.1: Sudoku 50k epochs of
    1000 groups at batch 768 = 65,104 steps). An arm's budget `fraction` scales the epochs (or
    steps) and keeps the number of evaluations (HRM: 0.4 × 50k epochs = 26,041 steps)."""
    epochs = (scale.get("epochs") or {}).get(task)
    if epochs is None:
        if scale.get("steps") is None:
            raise SuiteError(
                f"scale {scale['name']!r} gives neither steps nor epochs.{task} for task {task!r}"
            )
        steps = max(1, int(scale["steps"] * fraction))
        evaluations = max(1, scale["steps"] // scale["eval_every"])
        eval_every = scale["eval_every"] if fraction == 1.0 else max(1, steps // evaluations)
    else:
        train = manifest["splits"]["train"]
        steps = int(
            epochs * fraction * train["groups"] * train["examples"] / train["puzzles"] / batch
        )
        eval_every = max(1, steps // scale["evaluations"])
    return {"steps": steps, "eval_every": eval_every, "eval_batch_size": scale["eval_batch_size"]}


def plan(
    cfg: dict[str, Any],
    base: Path,
    code: CodeIdentity | None = None,
    request: Request | None = None,
) -> dict[str, Any]:
    """Validate everything and resolve the suite into plain trial specs (nothing launched).

    The execution's name is a digest of what decides its results: every resolved trial spec
    (configs, budget, dataset ids, labels) and the code (`code.label`: commit plus local
    changes to the packages). The same command with the same code resumes it; other code or
    another config is another execution."""
    request = request or read_request(cfg)
    code = code if code is not None else code_identity()
    suite, scale, arms, seeds = request.suite, request.scale, request.arms, request.seeds
    storage = {
        "datasets": _absolute(cfg["storage"]["datasets"], base / ".trm" / "datasets"),
        "results": _absolute(cfg["storage"]["results"], base / ".trm" / "ray_results"),
        "cache": str((base / ".trm" / "cache" / "datasets").resolve()),
    }
    datasets = {  # task → (dataset id, manifest), each built once
        task: ensure_dataset(task, arguments, storage["datasets"], base)
        for task, arguments in request.data_arguments.items()
    }
    shapes = {task: task_shape(manifest) for task, (_, manifest) in datasets.items()}
    request.validate(shapes)
    specs = []
    for arm in arms:
        task = suite.task_of(arm)
        dataset_id, manifest = datasets[task]
        resolved = request.resolution(arm, shapes[task])
        model, arm_train = resolved.model, resolved.train
        fraction = suite.arm(arm).budget_fraction
        budget = trial_budget(scale, task, manifest, arm_train.global_batch_size, fraction)
        label = resolved.run_label
        if fraction != 1.0:  # the row says the budget it ran, not only the suite's
            label += f" [budget: {fraction:g}× = {budget['steps']:,} steps]"
        workers = scale.get("workers_per_trial", 1)
        if arm_train.global_batch_size % workers:
            raise SuiteError(
                f"arm {arm!r}: train.global_batch_size={arm_train.global_batch_size} does not "
                f"split over scale.workers_per_trial={workers}; use a multiple of the workers"
            )
        for seed in range(seeds if not request.is_search else 1):
            train = arm_train.replace(seed=seed)
            specs.append(
                TrialSpec(
                    suite=suite.name,
                    arm=arm,
                    label=label,
                    seed=seed,
                    task=task,
                    scale=scale["name"],
                    device=cfg["device"],
                    threads=scale["cpus_per_trial"],
                    model=model,
                    train=train,
                    budget=Budget(**budget),
                    dataset=DatasetRef(dataset_id, storage["datasets"], storage["cache"]),
                    tags={
                        "trm.suite": suite.name,
                        "trm.label": label,  # as run, whatever the file says later
                        "trm.task": task,
                        "trm.scale": scale["name"],
                        "trm.dataset_id": dataset_id,
                        "trm.declared_override": str(resolved.declared_override).lower(),
                        **(
                            {"trm.search_values": json.dumps(request.search_values)}
                            if request.search_values
                            else {}
                        ),
                        **run_tags(code),
                        **axis_tags(dataclasses.asdict(model), dataclasses.asdict(train)),
                    },
                    workers=workers,
                    gpus_per_worker=_gpus_per_worker(scale) if workers > 1 else 0.0,
                    inject_failure=(cfg.get("inject_failure") or {}).get(arm),
                    checkpoint_every_s=(
                        None
                        if scale.get("checkpoint_every_min") is None
                        else 60.0 * scale["checkpoint_every_min"]
                    ),
                    full_checkpoints=scale.get("full_checkpoints"),
                )
            )
    # Longest trials first (by model FLOPs per step): with fewer slots than trials the suite
    # then ends close to total work / slots instead of waiting on one slow arm started last.
    specs.sort(key=lambda s: -supervision_step_flops(s.model, training=True))
    portable = [s.digest_form() for s in specs]  # what runs, not where nor who
    config_digest = [{**s, "tags": _without_code(s["tags"])} for s in portable]
    # seeds=auto: the rule is part of what decides which trials run (unchanged without it)
    rule = [] if request.seeds_auto is None else [{"seeds": "auto", **request.seeds_auto}]
    config_digest = _digest([config_digest, *rule] if rule else config_digest)
    return {
        "suite": suite,
        "scale": scale,
        "request": request,
        "specs": specs,
        "storage": storage,
        "code": code,
        "config_digest": config_digest,
        "execution": f"{suite.name}-{scale['name']}-{_digest([portable, code.label, *rule])}",
        "dataset_ids": {task: ident for task, (ident, _) in datasets.items()},
    }


def _gpus_per_worker(scale: dict[str, Any]) -> float:
    """A worker's GPUs: the scale's gpus_per_trial, which is per worker in a worker group
    (`auto` is sized per arm when the trials start: 0 until then)."""
    gpus = scale["gpus_per_trial"] or 0
    return 0.0 if gpus == "auto" else float(gpus)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:10]


def _without_code(tags: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in tags.items() if k not in run_tags(CodeIdentity("", ""))}


SEARCH_KEY_SEPARATOR = "__"  # search params are flat keys: "train__lr" for train.lr


def _search_space(space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from ray import tune

    out = {}
    for key, spec in space.items():
        kind, args = next(iter(spec.items()))
        name = key.replace(".", SEARCH_KEY_SEPARATOR)
        out[name] = tune.choice(args) if kind == "choice" else getattr(tune, kind)(*args)
    return out


def _search_tune_config(suite: Suite, budget: Budget) -> dict[str, Any]:
    """Optuna (seeded) proposes; ASHA stops weak trials early. Time is counted in evaluations,
    the only moments a trial reports."""
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    metric = f"eval/{suite.metric}"
    config: dict[str, Any] = {
        "search_alg": OptunaSearch(metric=metric, mode="max", seed=suite.search["seed"]),
        "num_samples": suite.search["num_samples"],
    }
    asha = suite.search["scheduler"].get("asha")
    if asha is not None:
        config["scheduler"] = ASHAScheduler(
            metric=metric,
            mode="max",
            max_t=max(1, budget.steps // budget.eval_every),
            grace_period=asha.get("grace_period", 1),
            reduction_factor=asha.get("reduction_factor", 2),
        )
    return config


def _results_location(uri: str):
    """(path, filesystem) for Ray Tune: s3:// goes through the same configured pyarrow S3
    filesystem as the dataset store (endpoint and retries from the AWS variables)."""
    if uri.startswith("s3://"):
        from datasets.store import s3_filesystem

        return uri[len("s3://") :], s3_filesystem()
    return uri, None


def _spec_of(trial_or_result) -> TrialSpec:
    """The spec a Tune trial (or its result) was given, read back through its type."""
    return TrialSpec.from_dict(trial_or_result.config["trial"])


def _trial_name(trial) -> str:
    spec = _spec_of(trial)
    return f"{spec.arm}-seed{spec.seed}-{trial.trial_id}"


def _progress_callback(total: int):
    """One line per evaluation and per ended trial. Tune's own tables (verbose=1) print every
    trial's whole spec at its start and end, which buries the numbers. A search trial is named
    by its trial id and sampled values (they share arm and seed)."""
    from ray import tune

    def name(trial) -> str:
        spec = _spec_of(trial)
        values = trial.config.get("search")
        if values:
            return f"{spec.arm}/{trial.trial_id}{_describe_search(values)}"
        return spec.run_name

    class ProgressLines(tune.Callback):
        def __init__(self):
            self.ended = 0

        def on_trial_result(self, iteration, trials, trial, result, **info):
            print(
                f"{name(trial)}: step {int(result.get('step', 0))}"
                f"/{_spec_of(trial).budget.steps}  exact "
                f"{100 * result.get('eval/exact_accuracy', float('nan')):.1f} %  token "
                f"{100 * result.get('eval/token_accuracy', float('nan')):.1f} %",
                flush=True,
            )

        def _ended(self, trial, outcome: str) -> None:
            self.ended += 1
            print(f"{name(trial)}: {outcome} ({self.ended} of {total} ended)", flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._ended(trial, "finished")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._ended(trial, "FAILED")

    return ProgressLines()


def _start_ray(cluster: dict[str, Any], base: Path) -> None:
    """Join the cluster at `cluster.address`, or start the embedded Ray: loopback only, its
    session files under this working directory (orchestration.ray_session), and what a killed
    earlier driver of this directory left behind swept first."""
    import ray

    if ray.is_initialized():
        return
    if cluster["address"]:
        ray.init(address=cluster["address"])
        return
    keep_on_loopback()
    temp_dir = ray_temp_dir(base)
    swept = sweep_stale_sessions(temp_dir)
    if swept:
        print(f"removed {len(swept)} Ray session(s) left by a killed driver", file=sys.stderr)
    ray.init(
        # "local": a new Ray here even when the shell exports a cluster's RAY_ADDRESS (which
        # ray.init would otherwise join); joining one is cluster=address
        address="local",
        num_cpus=cluster["num_cpus"],
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=str(temp_dir),
        log_to_driver=False,
    )


def _check_gpus(scale: dict[str, Any]) -> None:
    """Before any dataset is built or downloaded: a GPU scale needs GPUs in the cluster."""
    import ray

    gpus = scale["gpus_per_trial"] or 0
    if gpus and ray.cluster_resources().get("GPU", 0) < (1 if gpus == "auto" else min(gpus, 1)):
        raise SuiteError(
            f"scale {scale['name']!r} asks {gpus} GPU per trial but the Ray cluster "
            "has no GPU; use scale=mini on a CPU machine or join a GPU cluster"
        )


def _parent_run(
    tracker: Tracker, experiment_id: str, planned: dict[str, Any], execution: str, command: dict
) -> str:
    """The execution's MLflow parent run: found again on a resume, otherwise created with what
    produced it (command line, overrides, code, diff, config digest). Says in one line when an
    earlier execution of the same config ran other code."""
    suite, scale, specs = planned["suite"], planned["scale"], planned["specs"]
    code: CodeIdentity = planned["code"]
    parent_tags = {"trm.execution": execution, "trm.role": "suite"}
    parent = tracker.find_run(experiment_id, parent_tags)
    if parent:
        tracker.resume(parent)
        return parent
    earlier = tracker.client.search_runs(
        [experiment_id],
        f"tags.`trm.config_digest` = '{planned['config_digest']}' and "
        f"tags.`trm.code` != '{code.label}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if earlier:
        tags = earlier[0].data.tags
        print(
            f"code changed since execution {tags.get('trm.execution')} "
            f"({tags.get('trm.code')} -> {code.label}): starting execution {execution}; "
            "the earlier results stay in their own run",
            file=sys.stderr,
        )
    request: Request = planned["request"]
    parent = tracker.start_run(
        experiment_id,
        execution,
        {
            **parent_tags,
            "trm.suite": suite.name,
            "trm.kind": "search" if request.is_search else "grid",
            "trm.scale": scale["name"],
            "trm.dataset_id": ",".join(planned["dataset_ids"].values()),
            "trm.config_digest": planned["config_digest"],
            "trm.command": command["line"],
            "trm.overrides": json.dumps(command["overrides"]),
            **({"trm.seeds": "auto"} if request.seeds_auto else {}),
            **run_tags(code),
        },
        params={
            "suite": suite.name,
            "scale": scale,
            "arms": list(dict.fromkeys(s.arm for s in specs)),
            "seeds": "auto" if request.seeds_auto else max(s.seed for s in specs) + 1,
            **({"seeds_auto": request.seeds_auto} if request.seeds_auto else {}),
            "datasets": planned["dataset_ids"],
            "command": command["line"],
            "overrides": command["overrides"] or "none",
            "model": request.cli_model,
            "train": request.cli_train,
            "search_values": request.search_values or "none",
        },
    )
    if code.diff:  # what "+diff.<digest>" in the code tag means, for whoever reads the run
        tracker.log_text(parent, code.diff, "code/diff.patch")
    return parent


def launch(
    cfg: dict[str, Any], base: Path, command: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Run the suite; `command`: {"line": the command line, "overrides": Hydra's overrides}."""
    from ray import tune

    from orchestration.trial import run_trial

    command = command or {"line": "", "overrides": []}
    request = read_request(cfg)
    check_services(cfg)
    # from here on, an S3 or MLflow server silent for outage.after_s stops the suite (exit 3)
    outage = cfg["outage"]
    stop = StopOnOutage(None if cfg["cluster"]["address"] else ray_temp_dir(base))
    probes = service_probes(cfg, min(CONNECT_TIMEOUT_S, outage["probe_every_s"]))
    with ServiceWatch(probes, outage["after_s"], outage["probe_every_s"], stop):
        _start_ray(cfg["cluster"], base)
        _check_gpus(request.scale)
        planned = plan(cfg, base, request=request)
        execution = planned["execution"]
        if not cfg.get("resume", True):
            execution = f"{execution}-{time.strftime('%Y%m%d-%H%M%S')}"
        # a second driver of this execution raises ExecutionBusy (a ValueError: nothing ran)
        with one_driver(planned["storage"]["results"], execution, command["line"]):
            return _drive(cfg, base, planned, execution, command, run_trial, tune, stop)


def _drive(cfg, base, planned, execution, command, run_trial, tune, stop) -> list[dict[str, Any]]:
    """The execution, under its one-driver lock: parent run, trials, summary and report."""
    suite, scale = planned["suite"], planned["scale"]
    tracking_uri = cfg["tracking"]["uri"] or default_tracking_uri(base)
    tracker = Tracker(tracking_uri)
    experiment_id = tracker.experiment(
        f"trm-lab/{suite.name}", default_artifact_location(base, tracking_uri)
    )
    parent = _parent_run(tracker, experiment_id, planned, execution, command)
    stop.runs = (tracker, experiment_id, parent)  # what an outage ends KILLED
    run = _run_rounds if planned["request"].seeds_auto else _run_trials
    try:
        rows = run(cfg, planned, execution, tracker, experiment_id, parent, run_trial, tune)
    except BaseException as err:  # nothing may leave the parent RUNNING
        tracker.finish(
            parent,
            "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED",
            error=f"{type(err).__name__}: {err}",
        )
        raise
    failed = sum(r["status"] == "FAILED" for r in rows)
    tracker.finish(
        parent,
        "FAILED" if failed else "FINISHED",
        error=f"{failed} trial(s) failed" if failed else None,
    )
    print_summary(suite, scale, rows)
    from orchestration.report import report

    print(report(suite.name, tracking_uri, run=parent, out=base / ".trm" / "reports"))
    return rows


# Tune copies these from the driver's environment into every trial actor's runtime_env, and Ray
# writes runtime_envs in plain text to its logs (runtime_env_agent.log, mode 644, kept after
# the run; the dashboard shows them on a cluster). Workers get credentials from their own
# environment instead: the node's (the embedded Ray's daemons inherit the driver's), the pod's
# Secret on Kubernetes.
CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN",
                        "AWS_SESSION_TOKEN")  # fmt: skip


def _keep_credentials_out_of_runtime_envs() -> None:
    from ray.tune.execution import class_cache

    class_cache.ENV_VARS_TO_PROPAGATE = set(class_cache.ENV_VARS_TO_PROPAGATE) - set(
        CREDENTIAL_VARIABLES
    )


# How often Tune saves its experiment state (at most; each save uploads a few hundred KB at
# most). Tune's default ties it to the checkpoint retention (a save every `num_to_keep`
# checkpoints, else every >= 10 s); every checkpoint is kept here, so without this a search
# killed within 10 s of a trial's end re-sampled that trial on resume (an extra trial).
EXPERIMENT_STATE_EVERY_S = "2"


def _run_trials(
    cfg, planned, execution, tracker, experiment_id, parent, run_trial, tune, specs=None, name=None
):
    """Hand the specs (default: the plan's) to Ray Tune as the experiment `name` (default: the
    execution's) — a new Tuner, or the saved one on a resume; one row each."""
    _keep_credentials_out_of_runtime_envs()
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", EXPERIMENT_STATE_EVERY_S)
    suite, scale = planned["suite"], planned["scale"]
    specs = planned["specs"] if specs is None else specs
    name = name or execution
    request: Request = planned["request"]
    where = Tracking(tracker.uri, experiment_id, parent)
    specs = [spec.attach(execution, where) for spec in specs]
    gpus = scale["gpus_per_trial"] or 0
    cpus = scale["cpus_per_trial"]
    from orchestration.trial import CHECKPOINT_FILE

    trial_function = resumable(run_trial, CHECKPOINT_FILE)
    shares = None
    if gpus == "auto":  # one probe per arm measures its peak memory on a cluster GPU
        shares = auto_gpu_shares(specs, cpus)
        print(f"GPU share per trial, from measured peak memory: {shares}", file=sys.stderr)
        tracker.client.set_tag(parent, "trm.gpu_shares", json.dumps(shares, sort_keys=True))
    if specs[0].workers > 1:  # a worker group per trial: Ray Train reserves each worker
        from orchestration.workers import trial_resources

        if shares is not None:
            specs = [dataclasses.replace(s, gpus_per_worker=shares[s.arm]) for s in specs]
        trainable = tune.with_resources(trial_function, trial_resources())
    elif shares is not None:
        trainable = tune.with_resources(
            trial_function,
            lambda config: tune.PlacementGroupFactory(
                [{"CPU": cpus, "GPU": shares[TrialSpec.from_dict(config["trial"]).arm]}]
            ),
        )
    else:
        trainable = tune.with_resources(trial_function, {"cpu": cpus, "gpu": gpus})
    storage_path, filesystem = _results_location(planned["storage"]["results"])
    experiment_path = f"{storage_path.rstrip('/')}/{name}"
    search_config = {}
    if request.is_search:
        param_space = {
            "trial": specs[0].to_dict(),
            "search": _search_space(suite.search["space"]),
        }
        search_config = _search_tune_config(suite, specs[0].budget)
        total = suite.search["num_samples"]
    else:
        param_space = {"trial": tune.grid_search([spec.to_dict() for spec in specs])}
        total = len(specs)
    if cfg.get("resume", True) and tune.Tuner.can_restore(experiment_path, filesystem):
        print(f"resuming {name} from {experiment_path}", file=sys.stderr)
        tracker.mark_interrupted(experiment_id, parent)
        tuner = tune.Tuner.restore(
            experiment_path,
            trainable,
            resume_errored=True,
            param_space=param_space,
            storage_filesystem=filesystem,
        )
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                **search_config,
                max_concurrent_trials=scale["max_concurrent_trials"],
                reuse_actors=True,  # one worker process per slot: imports and setup paid once
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage_path,
                storage_filesystem=filesystem,
                verbose=0,  # progress lines instead (_progress_callback)
                callbacks=[_progress_callback(total)],
                failure_config=tune.FailureConfig(max_failures=scale["max_failures"]),
                # Every checkpoint is kept (one per evaluation: `evaluations` of them, 10 at
                # paper scale): deleting old ones let a rerun meet a saved experiment state
                # naming a deleted checkpoint, which failed that trial for good (issue 15).
                checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
            ),
        )
    results = tuner.fit()
    _close_trial_runs(tracker, experiment_id, parent, results)
    rows = []
    for result in results:
        spec = _spec_of(result)
        rows.append(
            {
                "arm": spec.arm + _describe_search(result.config.get("search") or {}),
                "seed": spec.seed,
                "status": "FAILED" if result.error else "FINISHED",
                "exact_accuracy": (result.metrics or {}).get("eval/exact_accuracy"),
                "error": str(result.error) if result.error else None,
            }
        )
    return rows


ROUND_TAG = "trm.seeds_auto.round{}"  # on the parent: {arm: [first seed, end]} of round k


def _round_seeds(
    tracker: Tracker, parent: str, index: int, ranges: dict[str, list[int]]
) -> dict[str, list[int]]:
    """Round `index`'s seeds: as recorded on the parent run if an earlier driver of this
    execution got that far (what ran is what a resume continues), else `ranges`, recorded
    before the round starts."""
    key = ROUND_TAG.format(index)
    recorded = tracker.client.get_run(parent).data.tags.get(key)
    if recorded is not None:
        seeds = {arm: list(r) for arm, r in json.loads(recorded).items()}
        if seeds != ranges:
            print(
                f"round {index}: the seeds recorded on the parent run ({key}) differ from "
                f"what the results give now ({ranges}); continuing what ran: {seeds}",
                file=sys.stderr,
            )
        return seeds
    tracker.client.set_tag(parent, key, json.dumps(ranges))
    return ranges


def _seeds(count: int) -> str:
    return f"{count} seed" + ("" if count == 1 else "s")


def _run_rounds(cfg, planned, execution, tracker, experiment_id, parent, run_trial, tune):
    """seeds=auto: round 1 runs `first` seeds of every arm; after each round the results are
    read back from MLflow as the report reads them, and the next round adds `add` seeds to the
    arms whose verdicts are still undecided (and to the baseline while any Δ baseline is), up
    to `max` seeds (orchestration.verdicts). Each round is its own Tune experiment,
    `<execution>-round<k>`, inside the one execution (one parent run, trial runs
    `<arm>/seed<k>`); the same command after a crash replays the rounds from MLflow and the
    saved Tune experiments: finished trials are not rerun."""
    from orchestration.report import Execution, arm_states, collect, numbers
    from orchestration.verdicts import seeds_to_add, stop_reasons, wanting

    request: Request = planned["request"]
    suite, rule = planned["suite"], request.seeds_auto
    baseline = suite.baseline.name
    given = dict.fromkeys(request.arms, 0)
    adding = dict.fromkeys(request.arms, rule["first"])
    print(
        f"round 1: {_seeds(rule['first'])} for each of {list(adding)} (seeds=auto: then "
        f"+{rule['add']} per round to undecided arms, at most {rule['max']})",
        flush=True,
    )
    rows, index = [], 1
    while adding:
        ranges = {arm: [given[arm], given[arm] + n] for arm, n in adding.items()}
        ranges = _round_seeds(tracker, parent, index, ranges)
        wanted = {(arm, seed) for arm, (start, end) in ranges.items() for seed in range(start, end)}
        specs = [
            s.with_tags(**{"trm.seeds_auto.round": str(index)})
            for s in planned["specs"]
            if (s.arm, s.seed) in wanted
        ]
        name = f"{execution}-round{index}"
        rows += _run_trials(
            cfg, planned, execution, tracker, experiment_id, parent, run_trial, tune, specs, name
        )
        for arm, (_, end) in ranges.items():
            given[arm] = max(given[arm], end)
        found, arm_rows, _ = collect(suite, tracker, parent, seeds_below=given)
        records = numbers(arm_rows, Execution.of(found).comparable, baseline, suite.tolerance)
        states = arm_states(records, given)
        adding = seeds_to_add(states, baseline, rule["add"], rule["max"])
        index += 1
        if adding:
            why = wanting(states, baseline)
            counts = sorted(set(adding.values()))
            print(
                f"round {index}: adding {'/'.join(map(str, counts))} "
                f"seed{'s' if counts != [1] else ''} to {list(adding)}: "
                + "; ".join(f"{arm}: {why[arm]}" for arm in adding),
                flush=True,
            )
    reasons = stop_reasons(states, baseline, rule["max"])
    print(
        f"seeds=auto: {index - 1} round(s); "
        + ", ".join(f"{arm} {_seeds(given[arm])} ({reasons[arm]})" for arm in given),
        flush=True,
    )
    return rows


def _close_trial_runs(tracker: Tracker, experiment_id: str, parent: str, results):
    """No trial run stays RUNNING: a trial whose process died (killed, out of memory) on its
    last allowed attempt never closed its run. Those of errored trials end FAILED with Tune's
    error. A trial Tune saw end well but whose run is still RUNNING was stopped between its
    last report and closing its run (Tune ends the actor of a finished or scheduler-stopped
    trial; under load the close can lose that race): FINISHED if it trained its whole budget,
    else KILLED and tagged stopped early, as the trial itself would have closed it. Any other
    left RUNNING ends KILLED, tagged with why."""
    for result in results:
        spec = _spec_of(result)
        if result.config.get("search"):  # the run was found by the sample's trial id
            trial_id = str((result.metrics or {}).get("trial_id", ""))
            spec = dataclasses.replace(spec, search_trial=trial_id)
        run = tracker.find_run(experiment_id, spec.run_tags())
        if not run:
            continue
        reached = int((result.metrics or {}).get("step", 0))
        status = tracker.status(run)
        finished_as_driver_died = (  # ended KILLED when the suite resumed; Tune has its end
            status == "KILLED"
            and not result.error
            and reached >= spec.budget.steps
            and INTERRUPTED_TAG in tracker.client.get_run(run).data.tags
        )
        if finished_as_driver_died:
            tracker.resume(run)
            status = "RUNNING"
        if status != "RUNNING":
            continue
        if result.error:
            tracker.finish(run, "FAILED", error=f"{type(result.error).__name__}: {result.error}")
        elif reached >= spec.budget.steps:
            tracker.finish(run, "FINISHED")
        elif reached > 0:
            tracker.client.set_tag(run, STOPPED_EARLY_TAG, f"at step {reached}")
            tracker.finish(run, "KILLED")
    tracker.end_running_children(
        experiment_id, parent, "KILLED", "its trial ended without closing its run"
    )


def _describe_search(values: dict[str, Any]) -> str:
    """ " [train.lr=0.00123, model.T=3]" for Tune's flat search keys ("train__lr"), else ""."""
    if not values:
        return ""
    dotted = {k.replace(SEARCH_KEY_SEPARATOR, "."): v for k, v in values.items()}
    return f" [{describe_values(dotted)}]"


def print_summary(suite: Suite, scale: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    print(f"\n{suite.title} — scale {scale['label']}")
    print("| arm | seed | status | exact accuracy |\n|---|---|---|---|")
    for row in sorted(
        rows,
        key=lambda r: (
            [a.name for a in suite.all_arms].index(r["arm"].split(" [")[0]),
            r["seed"],
            r["arm"],
        ),
    ):
        accuracy = "—" if row["exact_accuracy"] is None else f"{row['exact_accuracy']:.1%}"
        print(f"| {row['arm']} | {row['seed']} | {row['status']} | {accuracy} |")


@hydra.main(config_path="conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    try:
        values = OmegaConf.to_container(cfg, resolve=True)
    except Exception as err:  # an interpolation: omegaconf raises several types
        missing = missing_variable(err)
        print(
            f"error: the chosen storage/tracking/cluster group reads ${missing}, which is not "
            f"set; export it (see README, 'Run on a cluster') or use the local group"
            if missing
            else f"error: {type(err).__name__}: {err}",
            file=sys.stderr,
        )
        sys.exit(2)
    command = {
        "line": " ".join(["python -m orchestration.ablate", *map(shlex.quote, sys.argv[1:])]),
        "overrides": list(HydraConfig.get().overrides.task),
    }
    try:
        rows = launch(values, Path.cwd(), command)
    except ValueError as err:  # SuiteError, config and data validation: nothing was launched
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if any(r["status"] == "FAILED" for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
