"""Run a suite of ablations as Ray Tune trials, one per (arm, seed), tracked in MLflow.

    python -m orchestration.ablate suite=paper scale=mini
    python -m orchestration.ablate suite=smoke scale=smoke arms=[trm] seeds=1 model.hidden=48
    python -m orchestration.ablate suite=paper storage=s3 tracking=server cluster=address
    python -m orchestration.ablate --help        # groups: scale, storage, tracking, cluster
    python -m orchestration.ablate suite=paper --cfg job   # the composed config

With nothing configured everything runs here: local Ray, datasets and Ray results under .trm/,
MLflow in .trm/mlflow.db. The same command after a crash resumes the suite from its checkpoints
(finished trials are not rerun); `resume=false` starts afresh.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
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

from orchestration.resources import auto_gpu_shares, check_gpus_per_trial  # noqa: E402
from orchestration.suite import Suite, available_suites, load_suite  # noqa: E402
from orchestration.tasks import task_shape  # noqa: E402
from orchestration.tracking import (  # noqa: E402
    Tracker,
    default_artifact_location,
    default_tracking_uri,
    git_commit,
)
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


def _axis_tags(model: ModelConfig, train: TrainConfig) -> dict[str, str]:
    tags = {f"axis.{k}": str(v) for k, v in dataclasses.asdict(model).items()}
    tags.update({"axis.ema": str(train.ema), "axis.ema_rate": str(train.ema_rate)})
    return tags


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

    def validate(self, task_shapes: dict[str, dict[str, int]]) -> None:
        """Every arm resolves to valid configs and changes only the axes it declares."""
        scale = self.scale
        self.suite.validate(task_shapes, scale["model"], scale["train"])
        for arm in self.arms:
            shape = task_shapes[self.suite.task_of(arm)]
            self.suite.resolve(
                arm, shape, scale["model"], scale["train"], self.cli_model, self.cli_train
            )


def read_request(cfg: dict[str, Any]) -> Request:
    """The composed config's request, or a SuiteError/ValueError naming what is wrong."""
    suite: Suite = load_suite(cfg["suite"])
    scale = cfg["scale"]
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
    return Request(
        suite=suite,
        scale=scale,
        arms=arms,
        seeds=int(cfg.get("seeds") or scale.get("seeds") or suite.seeds),
        data_arguments=data_arguments,
        cli_model={k: v for k, v in (cfg.get("model") or {}).items() if v is not None},
        cli_train={k: v for k, v in (cfg.get("train") or {}).items() if v is not None},
    )


def trial_budget(scale: dict[str, Any], task: str, manifest: dict, batch: int) -> dict[str, int]:
    """Steps and evaluation interval of one trial. A scale gives `steps` and `eval_every`, or
    `epochs` per task and a number of `evaluations`: steps = epochs × groups × examples per
    puzzle / batch, as the official code counts them (TRM_SPEC §2.1: Sudoku 50k epochs of
    1000 groups at batch 768 = 65,104 steps)."""
    epochs = (scale.get("epochs") or {}).get(task)
    if epochs is None:
        if scale.get("steps") is None:
            raise SuiteError(
                f"scale {scale['name']!r} gives neither steps nor epochs.{task} for task {task!r}"
            )
        steps, eval_every = scale["steps"], scale["eval_every"]
    else:
        train = manifest["splits"]["train"]
        steps = int(epochs * train["groups"] * train["examples"] / train["puzzles"] / batch)
        eval_every = max(1, steps // scale["evaluations"])
    return {"steps": steps, "eval_every": eval_every, "eval_batch_size": scale["eval_batch_size"]}


def plan(cfg: dict[str, Any], base: Path) -> dict[str, Any]:
    """Validate everything and resolve the suite into plain trial specs (nothing launched)."""
    request = read_request(cfg)
    suite, scale, arms, seeds = request.suite, request.scale, request.arms, request.seeds
    cli_model, cli_train = request.cli_model, request.cli_train
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
    commit = git_commit(base)
    specs = []
    for arm in arms:
        task = suite.task_of(arm)
        dataset_id, manifest = datasets[task]
        model, arm_train = suite.resolve(
            arm, shapes[task], scale["model"], scale["train"], cli_model, cli_train
        )
        budget = trial_budget(scale, task, manifest, arm_train.global_batch_size)
        for seed in range(seeds):
            train = arm_train.replace(seed=seed)
            specs.append(
                {
                    "suite": suite.name,
                    "arm": arm,
                    "label": suite.arm(arm).label,
                    "seed": seed,
                    "task": task,
                    "scale": scale["name"],
                    "device": cfg["device"],
                    "threads": scale["cpus_per_trial"],
                    "model": dataclasses.asdict(model),
                    "train": dataclasses.asdict(train),
                    "budget": dict(budget),
                    "dataset": {
                        "id": dataset_id,
                        "cache": storage["cache"],
                        "store": storage["datasets"],
                    },
                    "tags": {
                        "trm.suite": suite.name,
                        "trm.label": suite.arm(arm).label,  # as run, whatever the file says later
                        "trm.task": task,
                        "trm.scale": scale["name"],
                        "trm.dataset_id": dataset_id,
                        "trm.git_commit": commit,
                        **_axis_tags(model, train),
                    },
                    "inject_failure": (cfg.get("inject_failure") or {}).get(arm),
                }
            )
    # Longest trials first (by model FLOPs per step): with fewer slots than trials the suite
    # then ends close to total work / slots instead of waiting on one slow arm started last.
    specs.sort(key=lambda s: -supervision_step_flops(ModelConfig(**s["model"]), training=True))
    # The execution's name identifies what runs, not where: the same command from another
    # working directory (a retried RayJob on a fresh cluster) must find the same experiment.
    portable = [{**s, "dataset": {**s["dataset"], "cache": None}} for s in specs]
    digest = hashlib.sha256(json.dumps(portable, sort_keys=True).encode()).hexdigest()[:10]
    return {
        "suite": suite,
        "scale": scale,
        "specs": specs,
        "storage": storage,
        "execution": f"{suite.name}-{scale['name']}-{digest}",
        "dataset_ids": {task: ident for task, (ident, _) in datasets.items()},
    }


SEARCH_KEY_SEPARATOR = "__"  # search params are flat keys: "train__lr" for train.lr


def _search_space(space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from ray import tune

    out = {}
    for key, spec in space.items():
        kind, args = next(iter(spec.items()))
        name = key.replace(".", SEARCH_KEY_SEPARATOR)
        out[name] = tune.choice(args) if kind == "choice" else getattr(tune, kind)(*args)
    return out


def _search_tune_config(suite: Suite, budget: dict[str, int]) -> dict[str, Any]:
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
            max_t=max(1, budget["steps"] // budget["eval_every"]),
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


def _trial_name(trial) -> str:
    spec = trial.config["trial"]
    return f"{spec['arm']}-seed{spec['seed']}-{trial.trial_id}"


def _progress_callback(total: int):
    """One line per evaluation and per ended trial. Tune's own tables (verbose=1) print every
    trial's whole spec at its start and end, which buries the numbers."""
    from ray import tune

    class ProgressLines(tune.Callback):
        def __init__(self):
            self.ended = 0

        def on_trial_result(self, iteration, trials, trial, result, **info):
            spec = trial.config["trial"]
            print(
                f"{spec['arm']}/seed{spec['seed']}: step {int(result.get('step', 0))}"
                f"/{spec['budget']['steps']}  exact "
                f"{100 * result.get('eval/exact_accuracy', float('nan')):.1f} %  token "
                f"{100 * result.get('eval/token_accuracy', float('nan')):.1f} %",
                flush=True,
            )

        def _ended(self, trial, outcome: str) -> None:
            self.ended += 1
            spec = trial.config["trial"]
            print(
                f"{spec['arm']}/seed{spec['seed']}: {outcome} ({self.ended} of {total} ended)",
                flush=True,
            )

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._ended(trial, "finished")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._ended(trial, "FAILED")

    return ProgressLines()


def launch(cfg: dict[str, Any], base: Path) -> list[dict[str, Any]]:
    import ray
    from ray import tune

    from orchestration.trial import run_trial

    planned = plan(cfg, base)
    suite, scale, specs = planned["suite"], planned["scale"], planned["specs"]
    execution = planned["execution"]
    if not cfg.get("resume", True):
        execution = f"{execution}-{time.strftime('%Y%m%d-%H%M%S')}"
    tracking_uri = cfg["tracking"]["uri"] or default_tracking_uri(base)
    tracker = Tracker(tracking_uri)
    experiment_id = tracker.experiment(
        f"trm-lab/{suite.name}", default_artifact_location(base, tracking_uri)
    )
    parent_tags = {"trm.execution": execution, "trm.role": "suite"}
    parent = tracker.find_run(experiment_id, parent_tags)
    if parent:
        tracker.resume(parent)
    else:
        parent = tracker.start_run(
            experiment_id,
            execution,
            {
                **parent_tags,
                "trm.suite": suite.name,
                "trm.scale": scale["name"],
                "trm.dataset_id": ",".join(planned["dataset_ids"].values()),
                "trm.git_commit": git_commit(base),
            },
            params={
                "suite": suite.name,
                "scale": scale,
                "arms": list(dict.fromkeys(s["arm"] for s in specs)),
                "seeds": max(s["seed"] for s in specs) + 1,
                "datasets": planned["dataset_ids"],
            },
        )
    for spec in specs:
        spec["execution"] = execution
        spec["tracking"] = {
            "uri": tracking_uri,
            "experiment_id": experiment_id,
            "parent_run_id": parent,
            "tags": spec.pop("tags"),
        }

    cluster = cfg["cluster"]
    if not ray.is_initialized():
        if cluster["address"]:
            ray.init(address=cluster["address"])
        else:
            ray.init(
                num_cpus=cluster["num_cpus"],
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                log_to_driver=False,
            )
    gpus = scale["gpus_per_trial"] or 0
    if gpus and ray.cluster_resources().get("GPU", 0) < (1 if gpus == "auto" else min(gpus, 1)):
        tracker.finish(parent, "FAILED", error="suite needs GPUs; the cluster has none")
        raise SuiteError(
            f"scale {scale['name']!r} asks {gpus} GPU per trial but the Ray cluster "
            "has no GPU; use scale=mini on a CPU machine or join a GPU cluster"
        )
    cpus = scale["cpus_per_trial"]
    if gpus == "auto":  # one probe per arm measures its peak memory on a cluster GPU
        shares = auto_gpu_shares(specs, cpus)
        print(f"GPU share per trial, from measured peak memory: {shares}", file=sys.stderr)
        tracker.client.set_tag(parent, "trm.gpu_shares", json.dumps(shares, sort_keys=True))
        trainable = tune.with_resources(
            run_trial,
            lambda config: tune.PlacementGroupFactory(
                [{"CPU": cpus, "GPU": shares[config["trial"]["arm"]]}]
            ),
        )
    else:
        trainable = tune.with_resources(run_trial, {"cpu": cpus, "gpu": gpus})
    storage_path, filesystem = _results_location(planned["storage"]["results"])
    experiment_path = f"{storage_path.rstrip('/')}/{execution}"
    search_config = {}
    if suite.kind == "search":
        param_space = {"trial": specs[0], "search": _search_space(suite.search["space"])}
        search_config = _search_tune_config(suite, specs[0]["budget"])
    else:
        param_space = {"trial": tune.grid_search(specs)}
    if cfg.get("resume", True) and tune.Tuner.can_restore(experiment_path, filesystem):
        print(f"resuming {execution} from {experiment_path}", file=sys.stderr)
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
                name=execution,
                storage_path=storage_path,
                storage_filesystem=filesystem,
                verbose=0,  # progress lines instead (_progress_callback)
                callbacks=[_progress_callback(len(specs))],
                failure_config=tune.FailureConfig(max_failures=scale["max_failures"]),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=3),
            ),
        )
    results = tuner.fit()
    rows = []
    for result in results:
        spec = result.config["trial"]
        rows.append(
            {
                "arm": spec["arm"] + _describe_search(result.config.get("search") or {}),
                "seed": spec["seed"],
                "status": "FAILED" if result.error else "FINISHED",
                "exact_accuracy": (result.metrics or {}).get("eval/exact_accuracy"),
                "error": str(result.error) if result.error else None,
            }
        )
    failed = sum(r["status"] == "FAILED" for r in rows)
    tracker.finish(
        parent,
        "FAILED" if failed else "FINISHED",
        error=f"{failed} trial(s) failed" if failed else None,
    )
    print_summary(suite, scale, rows)
    if suite.kind == "grid":
        from orchestration.report import report

        print(report(suite.name, tracking_uri, run=parent, out=base / ".trm" / "reports"))
    return rows


def _describe_search(values: dict[str, Any]) -> str:
    if not values:
        return ""
    shown = ", ".join(
        f"{k.replace(SEARCH_KEY_SEPARATOR, '.')}={v:.3g}"
        if isinstance(v, float)
        else f"{k.replace(SEARCH_KEY_SEPARATOR, '.')}={v}"
        for k, v in sorted(values.items())
    )
    return f" [{shown}]"


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
    values = OmegaConf.to_container(cfg, resolve=True)
    try:
        rows = launch(values, Path.cwd())
    except ValueError as err:  # SuiteError, config and data validation: nothing was launched
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if any(r["status"] == "FAILED" for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
