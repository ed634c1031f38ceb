"""seeds=auto: the round rule on synthetic seeds (which arms get more seeds, why, how many, and
why each stopped), the rule's checks (clear errors before anything runs), its execution
identity, and one end-to-end run of the smoke suite in rounds with a real local Ray and a
sqlite MLflow store, its driver killed (-9) in round 2: the same command replays the rounds
from MLflow and the saved Tune experiments, reruns no finished trial and finishes."""

import json
import re
import time

import pytest

from orchestration.report import ArmRow, arm_states, numbers
from orchestration.verdicts import (
    DELTA_DIRECTION,
    MAX_REACHED,
    UNDECIDED,
    seeds_to_add,
    stop_reasons,
    wanting,
)
from tests.orchestration.test_ablate import (
    SMOKE,
    ablate,
    compose,
    kill_driver,
    runs,
    start_driver,
)

# Table 1 at mini scale, as README's real run gave them per seed (trm, hrm), or near it.
MINI = {
    "trm": [90.0, 89.6, 90.8],
    "hrm": [0.0, 0.0, 0.0],  # Δ -90.1 ± 1.5: below 0 like the paper's -32.4: same direction
    "act_continue": [90.0, 90.6, 91.2],  # Δ +0.5 [-0.9, +1.8]: holds 0, ±1.4 ≤ 2: no effect
    "dual_net": [80.0, 87.4, 94.8],  # Δ -2.7 ± 18.4: undecided
}


def rows_of(values: dict[str, list[float]], paper: dict[str, float] | None = None) -> list:
    return [ArmRow(arm, arm, (paper or {}).get(arm), values=list(v)) for arm, v in values.items()]


def states_of(values, seeds, comparable=False, paper=None):
    records = numbers(rows_of(values, paper), comparable, "trm", 2.0)
    return arm_states(records, seeds)


def test_only_undecided_arms_and_their_baseline_get_more_seeds():
    paper = {"trm": 87.4, "hrm": 55.0, "act_continue": 86.1, "dual_net": 82.4}
    states = states_of(MINI, dict.fromkeys(MINI, 3), paper=paper)  # below the paper's scale
    assert {arm: s.verdicts[DELTA_DIRECTION] for arm, s in states.items()} == {
        "trm": None,
        "hrm": "same direction",
        "act_continue": "no effect",
        "dual_net": UNDECIDED,
    }
    assert all(s.verdicts["vs paper"] is None for s in states.values())  # n/c below scale
    assert wanting(states, "trm") == {
        "trm": "baseline of the undecided Δ of dual_net",
        "dual_net": "Δ direction undecided",
    }
    assert seeds_to_add(states, "trm", add=2, maximum=10) == {"trm": 2, "dual_net": 2}
    # near the maximum an arm gets only what is left; at it, none
    near = states_of(MINI, {"trm": 9, "hrm": 3, "act_continue": 3, "dual_net": 10}, paper=paper)
    assert seeds_to_add(near, "trm", add=2, maximum=10) == {"trm": 1}
    assert stop_reasons(near, "trm", 10) == {
        "trm": UNDECIDED,  # still wanted below the maximum: the rounds are not over
        "hrm": "decided",
        "act_continue": "decided",
        "dual_net": MAX_REACHED,
    }
    done = states_of(MINI, dict.fromkeys(MINI, 10), paper=paper)
    assert seeds_to_add(done, "trm", add=2, maximum=10) == {}
    assert stop_reasons(done, "trm", 10)["trm"] == MAX_REACHED


def test_at_the_papers_scale_the_verdict_against_the_paper_counts_too():
    values = {
        "trm": [87.0, 87.4, 87.8],  # [86.4, 88.4] holds 87.4, ±1.0: reproduced
        "act_continue": [80.0, 86.0, 92.0],  # holds 86.1 but ±14.9: undecided
        "no_ema": [89.0, 89.4, 89.8],  # 79.9 outside: not reproduced (decided); Δ opposite
    }
    paper = {"trm": 87.4, "act_continue": 86.1, "no_ema": 79.9}
    states = states_of(values, dict.fromkeys(values, 3), comparable=True, paper=paper)
    assert states["no_ema"].decided and states["trm"].decided
    # act's Δ -0.6 is undecided too: its baseline gets seeds as well
    assert wanting(states, "trm") == {
        "trm": "baseline of the undecided Δ of act_continue",
        "act_continue": "vs paper undecided; Δ direction undecided",
    }
    # a baseline whose own verdict is undecided (±18.4) gets seeds even when every Δ is
    # decided (both about -70 ± 18: below 0 like the paper's Δ) and every arm is
    values["trm"] = [80.0, 87.4, 94.8]
    values["act_continue"] = [10.0, 10.2, 10.4]
    values["no_ema"] = [20.0, 20.2, 20.4]
    states = states_of(values, dict.fromkeys(values, 3), comparable=True, paper=paper)
    assert wanting(states, "trm") == {"trm": "vs paper undecided"}


def test_an_arm_without_two_finished_seeds_is_undecided():
    states = states_of({"trm": [50.0], "one_step_grad": []}, {"trm": 1, "one_step_grad": 1})
    assert seeds_to_add(states, "trm", add=1, maximum=2) == {"trm": 1, "one_step_grad": 1}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["seeds=some"], "seeds='some' is not allowed; give a whole number >= 1, null"),
        (["seeds=auto", "seeds_auto.add=0"], "seeds_auto.add=0 is not allowed; it must be a whole"),
        (["seeds=auto", "seeds_auto.first=0"], "seeds_auto.first=0 is not allowed"),
        (
            ["seeds=auto", "seeds_auto.first=3", "seeds_auto.max=2"],
            "seeds_auto.max=2 is not allowed; it must be a whole number >= 3",
        ),
        (["seeds=auto", "seeds_auto.max=1.5"], "seeds_auto.max=1.5 is not allowed"),
    ],
)
def test_a_bad_seeds_auto_rule_is_refused_before_anything_runs(tmp_path, overrides, message):
    from orchestration.ablate import read_request

    with pytest.raises(ValueError, match=re.escape(message)):
        read_request(compose(*SMOKE, *overrides))


def test_seeds_auto_is_refused_for_a_search():
    from orchestration.ablate import read_request

    with pytest.raises(ValueError, match="seeds=auto adds seeds to a grid's arms in rounds"):
        read_request(compose("suite=search_lr", "scale=smoke", "seeds=auto"))


def test_the_rule_is_part_of_the_executions_name(tmp_path):
    from orchestration.ablate import plan, read_request

    request = read_request(compose(*SMOKE, "seeds=auto"))
    assert request.seeds_auto == {"first": 2, "add": 2, "max": 10}  # first: the suite's 2
    assert request.seeds == 10  # the plan holds every seed a round may run
    small = compose(*SMOKE, "seeds=auto", "seeds_auto.max=3")
    auto = plan(small, tmp_path)
    fixed = plan(compose(*SMOKE, "seeds=3"), tmp_path)
    assert len(auto["specs"]) == len(fixed["specs"]) == 2 * 3
    assert auto["execution"] != fixed["execution"]
    assert auto["config_digest"] != fixed["config_digest"]
    other = plan(compose(*SMOKE, "seeds=auto", "seeds_auto.max=3", "seeds_auto.add=1"), tmp_path)
    assert other["execution"] != auto["execution"]
    assert plan(small, tmp_path)["execution"] == auto["execution"]


AUTO = [
    *SMOKE, "seeds=auto", "seeds_auto.first=1", "seeds_auto.add=1", "seeds_auto.max=2",
    "scale.steps=80", "scale.eval_every=10", "scale.max_concurrent_trials=1",
]  # fmt: skip


@pytest.mark.slow
def test_smoke_suite_in_rounds_is_one_execution_and_resumes_after_kill_9(tmp_path):
    """Round 1: one seed per arm, so no interval and every Δ undecided; round 2 adds a seed to
    both (the baseline for the Δ); then the maximum, 2, ends it. The driver is killed (-9)
    during round 2; the same command replays round 1 from MLflow and its saved Tune
    experiment (nothing rerun), recomputes the same round 2 and finishes it."""
    driver = start_driver(tmp_path, AUTO)
    results = tmp_path / ".trm" / "ray_results"
    deadline = time.time() + 300
    while time.time() < deadline and not (
        list(results.glob("*-round2/*/checkpoint_*"))
        and list(results.glob("*-round2/experiment_state-*.json"))
    ):
        time.sleep(0.3)
    assert list(results.glob("*-round2/*/checkpoint_*")), "round 2 never started"
    kill_driver(driver, tmp_path)

    result = ablate(tmp_path, *AUTO)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "round 1: 1 seed for each of ['trm', 'one_step_grad']" in out
    assert (
        "round 2: adding 1 seed to ['trm', 'one_step_grad']: trm: baseline of the "
        "undecided Δ of one_step_grad; one_step_grad: Δ direction undecided" in out
    )
    assert "round 3" not in out
    assert re.search(r"seeds=auto: 2 round\(s\); trm 2 seeds \((decided|max reached)\)", out)
    uri = f"sqlite:///{tmp_path}/.trm/mlflow.db"
    client, children, parents = runs(uri)
    # one execution, one parent run (another would mean the code changed between the runs)
    assert len(parents) == 1, [p.data.tags["trm.code"] for p in parents]
    (parent,) = parents
    assert parent.info.status == "FINISHED"
    tags, params = parent.data.tags, parent.data.params
    execution = tags["trm.execution"]
    for k in (1, 2):  # each round's Tune experiment was restored
        assert f"resuming {execution}-round{k} from" in result.stderr
    assert tags["trm.seeds"] == "auto" and params["seeds"] == "auto"
    assert (params["seeds_auto.first"], params["seeds_auto.add"], params["seeds_auto.max"]) == (
        "1",
        "1",
        "2",
    )
    assert json.loads(tags["trm.seeds_auto.round1"]) == {"trm": [0, 1], "one_step_grad": [0, 1]}
    assert json.loads(tags["trm.seeds_auto.round2"]) == {"trm": [1, 2], "one_step_grad": [1, 2]}
    by_name = {r.info.run_name: r for r in children}
    assert sorted(by_name) == [
        "one_step_grad/seed0",
        "one_step_grad/seed1",
        "trm/seed0",
        "trm/seed1",
    ]
    for run in children:  # every trial finished, each evaluation logged once
        assert run.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "eval/exact_accuracy")]
        assert steps == list(range(10, 81, 10)), (run.info.run_name, steps)
    for name in ("trm/seed0", "one_step_grad/seed0"):  # round 1 was not trained again
        assert by_name[name].data.tags["trm.seeds_auto.round"] == "1"
        assert "trm.resumed_from_steps" not in by_name[name].data.tags
    assert by_name["trm/seed1"].data.tags["trm.seeds_auto.round"] == "2"
    assert sorted(p.name for p in results.iterdir() if p.is_dir()) == [
        f"{execution}-round1",
        f"{execution}-round2",
    ]
    # the report: seeds per arm and why they stopped, and the caveat of several looks
    assert re.search(r"seeds=auto \(first 1 seed per arm, then \+1 per round", out)
    assert re.search(r"TRM \(T=2, n=2\) \[scale: [^]]*\]: 2 seeds \((decided|max reached)\)", out)
    assert "every round looked at the intervals again" in out
