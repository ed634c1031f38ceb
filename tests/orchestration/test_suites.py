"""Suite files: every suite composes and validates (each arm resolves to valid configs and
changes only the axes it declares); the validator rejects undeclared changes, unknown keys and
unknown fields; the paper suite's arms reproduce Table 1's depth, NFP and parameter classes."""

import math
import textwrap

import pytest
import torch

from orchestration.suite import available_suites, load_suite
from trm_core import RecursiveReasoningModel, count_parameters

SUDOKU = dict(vocab_size=11, seq_len=81, num_puzzle_ids=1)


def shapes(suite) -> dict[str, dict[str, int]]:
    """Every task of the suite at its real token layout (ARC: 30x30 + EOS layout)."""
    from orchestration.tasks import shape_without_data

    return {task: shape_without_data(task) for task in suite.tasks}


@pytest.mark.parametrize("name", available_suites())
def test_every_suite_loads_and_validates(name):
    suite = load_suite(name)
    suite.validate(shapes(suite), {}, {})


def test_main_suite_matches_tables_4_and_5_depth_and_size():
    suite = load_suite("main")
    assert suite.tasks == ("sudoku", "maze", "arc1", "arc2")
    assert suite.metric_for("arc1") == "ARC/pass@2" and suite.metric_for("maze") == "exact_accuracy"
    for arm in suite.all_arms:
        model, _ = suite.resolve(arm.name, shapes(suite)[suite.task_of(arm)], {}, {})
        assert model.depth == arm.paper["depth"], arm.name
        assert model.forward_passes_per_step == arm.paper["nfp"], arm.name
        assert model.seq_len == (81 if suite.task_of(arm) == "sudoku" else 900), arm.name
        with torch.device("meta"):
            millions = count_parameters(RecursiveReasoningModel(model)) / 1e6
        assert f"{round(millions)}M" == arm.paper["params"], (arm.name, millions)


def test_an_arm_on_another_task_is_compared_on_that_task(tmp_path):
    """Switching the task changes vocabulary and length (never counted), but a train preset
    switch that comes with it must still be declared."""
    suite = _suite(
        tmp_path,
        """
        - name: on_arc
          label: "on ARC"
          task: arc1
          set: {train.preset: trm_arc}
          axes: []
    """,
    )
    arc = {"arc1": dict(vocab_size=12, seq_len=900, num_puzzle_ids=10)}
    with pytest.raises(ValueError, match=r"changes \['train.puzzle_emb_lr'"):
        suite.validate({"tiny_sudoku": SUDOKU, **arc}, {}, {})
    assert suite.tasks == ("tiny_sudoku", "arc1")
    suite.validate({"tiny_sudoku": SUDOKU}, {}, {})  # arms of tasks not built are skipped


def test_paper_suite_matches_table_1_depth_nfp_and_size():
    suite = load_suite("paper")
    for arm in suite.all_arms:
        model, _ = suite.resolve(arm.name, SUDOKU, {}, {})
        assert model.depth == arm.paper["depth"], arm.name
        assert model.forward_passes_per_step == arm.paper["nfp"], arm.name
        with torch.device("meta"):
            millions = count_parameters(RecursiveReasoningModel(model)) / 1e6
        assert f"{round(millions)}M" == arm.paper["params"], (arm.name, millions)


def _suite(tmp_path, arms_yaml):
    (tmp_path / "custom.yaml").write_text(
        textwrap.dedent("""
        name: custom
        task: tiny_sudoku
        baseline: {name: base, label: Base, set: {model.preset: trm_mlp}}
        arms:
    """)
        + textwrap.indent(textwrap.dedent(arms_yaml), "  ")
    )
    return load_suite("custom", directory=tmp_path)


def test_an_arm_that_changes_more_than_it_declares_is_rejected(tmp_path):
    suite = _suite(
        tmp_path,
        """
        - name: sneaky
          label: "w/ T=2"
          set: {model.T: 2, model.n: 2}
          axes: [model.T]
    """,
    )
    with pytest.raises(ValueError, match=r"arm 'sneaky' changes \['model.n'\] without declaring"):
        suite.validate({"tiny_sudoku": SUDOKU}, {}, {})


def test_a_preset_switch_must_declare_every_field_it_changes(tmp_path):
    suite = _suite(
        tmp_path,
        """
        - name: hrm
          label: HRM
          set: {model.preset: hrm}
          axes: [model.net]
    """,
    )
    with pytest.raises(ValueError, match="without declaring"):
        suite.validate({"tiny_sudoku": SUDOKU}, {}, {})


@pytest.mark.parametrize(
    "arm, message",
    [
        ("{name: a, label: A, set: {model.depth: 3}}", "`set` key 'model.depth' is not a field"),
        ("{name: a, label: A, axes: [model.wings]}", "axis 'model.wings' is not"),
        ("{name: a, label: A, colour: red}", "unknown key(s) ['colour']"),
        ("{name: base, label: Again}", "arm names must be unique"),
    ],
)
def test_malformed_arms_are_explained(tmp_path, arm, message):
    with pytest.raises(ValueError) as err:
        _suite(tmp_path, f"- {arm}\n")
    assert message in str(err.value)


def test_paper_depth_suite_matches_table_3_except_the_misprinted_k1_row():
    suite = load_suite("paper_depth")
    for arm in suite.all_arms:
        model, _ = suite.resolve(arm.name, SUDOKU, {}, {})
        printed = arm.paper["depth"]
        expected = printed - 1 if arm.name.endswith("k1_t1") else printed  # TRM_SPEC §5.3
        assert model.depth == expected, arm.name


def _smoke_scale() -> dict:
    import yaml

    from orchestration.suite import SUITE_DIR

    return yaml.safe_load(
        (SUITE_DIR.parent / "orchestration" / "conf" / "scale" / "smoke.yaml").read_text()
    )


@pytest.mark.parametrize("name", available_suites())
def test_every_arm_of_every_suite_trains_one_step_at_smoke_scale(name):
    from tests.conftest import random_batch
    from trm_core import Trainer

    suite, scale = load_suite(name), _smoke_scale()
    task_shapes = shapes(suite)
    for arm in suite.all_arms:
        shape = task_shapes[suite.task_of(arm)]
        model, train = suite.resolve(arm.name, shape, scale["model"], scale["train"])
        trainer = Trainer(model, train, device="cpu")
        metrics = trainer.train_step(random_batch(model, train.global_batch_size, seed=0))
        assert math.isfinite(metrics["loss"]), (name, arm.name)


def test_command_check_validates_mini_sudoku_at_the_shape_mini_trains():
    """scale=mini builds 6x6 sudoku_mini for the sudoku task: 36 cells, not Sudoku's 81."""
    from orchestration.command import check

    checked = check("python -m orchestration.ablate suite=paper scale=mini", {})
    assert checked.shapes["sudoku"] == dict(vocab_size=8, seq_len=36, num_puzzle_ids=1)
    paper = check("python -m orchestration.ablate suite=paper scale=paper", {})
    assert paper.shapes["sudoku"] == dict(vocab_size=11, seq_len=81, num_puzzle_ids=1)


def test_command_check_names_an_unset_cluster_variable_and_how_to_set_it():
    from orchestration.command import CommandError, check

    line = "python -m orchestration.ablate suite=paper scale=paper storage=s3 cluster=address"
    with pytest.raises(CommandError, match=r"reads \$TRM_DATASET_STORE .* set it as the cluster"):
        check(line, {})
    env = {"TRM_DATASET_STORE": "s3://b/datasets", "TRM_RESULTS_URI": "s3://b/results"}
    assert check(line, env).config["storage"]["datasets"] == "s3://b/datasets"
