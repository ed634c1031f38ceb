"""A field an arm declares is the arm's: command-line and scale overrides of it are refused (or,
with an explicit opt-in, labelled), a scale shrinks such fields only through its declared
`shrink` rule, and an arm whose declared change a scale erases is refused. Checked without
data, as `orchestration.command` does."""

import pytest

from orchestration.ablate import SuiteError, read_request
from orchestration.tasks import shape_without_data
from tests.orchestration.test_ablate import compose


def resolved(*overrides: str) -> dict:
    """arm → Resolution, after the same validation ablate runs before building anything."""
    request = read_request(compose(*overrides))
    shapes = {
        task: shape_without_data(task, request.data_arguments.get(task))
        for task in request.suite.tasks
        if task in request.data_arguments
    }
    request.validate(shapes)
    return {
        arm: request.resolution(arm, shapes[request.suite.task_of(arm)]) for arm in request.arms
    }


def test_a_command_line_override_of_a_declared_axis_is_refused_naming_arms_and_field():
    with pytest.raises(SuiteError) as err:
        read_request(compose("suite=paper", "scale=mini", "model.n=4"))
    message = str(err.value)
    assert "model.n" in message and "override_declared=true" in message
    for arm in ("hrm", "layers4_n3", "t2_n2", "'trm'"):
        assert arm in message


def test_the_opt_in_applies_it_and_every_changed_row_says_so():
    arms = resolved("suite=paper", "scale=mini", "model.n=4", "override_declared=true")
    assert all(r.model.n == 4 for r in arms.values())
    assert arms["trm"].run_label == "TRM (T=3, n=6) [scale: puzzle_emb_len=4] [override: n=4]"
    assert arms["t2_n2"].declared_override and arms["trm"].declared_override
    assert arms["no_ema"].run_label.endswith("[override: n=4]")


def test_an_override_no_arm_declares_is_applied_without_relabelling():
    arms = resolved("suite=paper", "scale=mini", "model.hidden=48")
    assert all(r.model.hidden == 48 and not r.declared_override for r in arms.values())
    assert "override" not in arms["trm"].run_label


def test_a_scale_block_may_not_set_a_declared_field():
    with pytest.raises(SuiteError, match=r"scale 'mini' sets model.puzzle_emb_len.*\['hrm'\]"):
        read_request(compose("suite=paper", "scale=mini", "+scale.model.puzzle_emb_len=4"))


def test_mini_shrinks_puzzle_slots_only_where_no_arm_declares_them_and_says_so():
    arms = resolved("suite=paper", "scale=mini")
    assert arms["hrm"].model.puzzle_emb_len == 1  # HRM's preset, as the paper's HRM
    assert arms["hrm"].run_label == "HRM"
    assert arms["trm"].model.puzzle_emb_len == 4
    assert arms["trm"].run_label == "TRM (T=3, n=6) [scale: puzzle_emb_len=4]"
    assert (arms["t2_n2"].model.T, arms["t2_n2"].model.n) == (2, 2)


def test_smoke_shrinks_recursion_visibly_and_refuses_arms_it_would_erase():
    arms = resolved("suite=paper_latents", "scale=smoke")
    baseline = arms[read_request(compose("suite=paper_latents")).suite.baseline.name]
    assert (baseline.model.T, baseline.model.n) == (1, 2)
    assert "[scale: T=1, n=2, puzzle_emb_len=2]" in baseline.run_label
    with pytest.raises(ValueError, match=r"arm 'hrm': its declared change of model.n \(2 vs 6\)"):
        resolved("suite=paper", "scale=smoke")
    # the arms a shrink rule does not erase still run at that scale
    kept = resolved("suite=paper", "scale=smoke", "arms=[trm,one_step_grad]")
    assert kept["one_step_grad"].model.grad == "one_step"


def test_search_fields_cannot_be_overridden_but_can_be_run_as_a_grid_arm():
    with pytest.raises(SuiteError, match=r"searched by suite 'search_lr'.*search_values"):
        read_request(compose("suite=search_lr", "scale=smoke", "train.lr=0.01"))
    arms = resolved("suite=search_lr", "scale=smoke", "search_values={train.lr:0.002,model.T:3}")
    (trm,) = arms.values()
    assert trm.train.lr == 0.002 and trm.model.T == 3 and not trm.declared_override
    assert trm.run_label == "TRM [model.T=3, train.lr=0.002] [scale: puzzle_emb_len=2]"
    with pytest.raises(SuiteError, match=r"not searched by suite 'search_lr'"):
        read_request(compose("suite=search_lr", "search_values={model.hidden:8}"))
    with pytest.raises(SuiteError, match=r"for search suites; suite 'smoke' is a grid"):
        read_request(compose("suite=smoke", "search_values={train.lr:0.1}"))
