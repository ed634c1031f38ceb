"""The trial's contract (orchestration/trial_spec.py): the specs `plan` resolves survive the
plain-dict trip through Tune unchanged, and a dict that is not a spec is refused by name."""

import json

import pytest

from orchestration.trial_spec import Tracking, TrialSpec, TrialSpecError
from tests.orchestration.test_ablate import compose


@pytest.fixture(scope="module")
def specs(tmp_path_factory):
    from orchestration.ablate import plan

    return plan(compose("suite=paper", "scale=mini", "seeds=2"), tmp_path_factory.mktemp("p"))[
        "specs"
    ]


def test_a_planned_spec_survives_the_trip_through_a_plain_json_dict(specs):
    for spec in specs:
        attached = spec.attach("paper-smoke-abc", Tracking("sqlite:///x.db", "1", "run0"))
        plain = json.loads(json.dumps(attached.to_dict()))  # what Tune stores and gives back
        assert TrialSpec.from_dict(plain) == attached
    by_arm = {(s.arm, s.seed): s for s in specs}
    hrm = by_arm["hrm", 1]
    assert hrm.model.net == "dual" and hrm.train.seed == 1 and hrm.train.ema is False
    assert hrm.run_name == "hrm/seed1" and hrm.tags["axis.net"] == "dual"


def test_the_run_identity_names_execution_arm_seed_and_a_search_trial(specs):
    spec = specs[0].attach("exe", Tracking("u", "1", "p"))
    assert spec.run_tags() == {"trm.execution": "exe", "trm.arm": spec.arm, "trm.seed": "0"}
    import dataclasses

    sample = dataclasses.replace(spec, search_trial="a1b2")
    assert sample.run_tags()["trm.trial"] == "a1b2" and sample.run_name == f"{spec.arm}/a1b2"


def test_what_changes_no_result_is_left_out_of_the_digest_form(specs):
    import dataclasses

    spec = specs[0]
    moved = dataclasses.replace(
        spec,
        checkpoint_every_s=60.0,
        full_checkpoints=2,
        dataset=dataclasses.replace(spec.dataset, cache="/elsewhere"),
        tags={**spec.tags, "mlflow.user": "someone"},
    )
    assert moved.digest_form() == spec.digest_form()
    assert dataclasses.replace(spec, seed=9).digest_form() != spec.digest_form()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("budget"), r"missing \['budget'\]"),
        (lambda d: d.update(gpus=1), r"unknown trial spec field\(s\) \['gpus'\]; allowed: "),
        (lambda d: d.update(seed="0"), r"'seed' must be int, not '0'"),
        (lambda d: d.update(threads=True), r"'threads' must be int, not True"),
        (lambda d: d["model"].update(mixer="conv"), r"mixer"),
        (lambda d: d["train"].update(lr_warmup_steps=-1), r"lr_warmup_steps"),
        (lambda d: d["budget"].pop("eval_every"), r"'budget' must have exactly the keys"),
        (lambda d: d["dataset"].update(id=3), r"'dataset.id' must be str, not 3"),
        (lambda d: d["tags"].update({"trm.seed": 0}), r"tags must map str to str"),
        (lambda d: d.update(seed=1), r"seed 1 differs from its train.seed 0"),
        (lambda d: d["budget"].update(steps=0), r"budget must be positive"),
        (lambda d: d.update(model=[1]), r"'model' must be a dict"),
    ],
)
def test_a_dict_that_is_not_a_spec_is_refused_naming_what_is_wrong(specs, change, message):
    plain = json.loads(json.dumps(next(s for s in specs if s.seed == 0).to_dict()))
    change(plain)
    with pytest.raises(TrialSpecError, match=message):
        TrialSpec.from_dict(plain)


def test_a_spec_is_frozen(specs):
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        specs[0].seed = 3
