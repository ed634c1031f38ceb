"""Model configuration: presets, parameter counts equal the papers' (§1.9), derived depth/NFP,
and clear errors for invalid configurations."""

import pytest
import torch

from trm_core import MODEL_PRESETS, ModelConfig, RecursiveReasoningModel, TrainConfig
from trm_core.model import count_parameters

SUDOKU = dict(vocab_size=11, seq_len=81)


@pytest.mark.parametrize(
    "preset, shape, expected",
    [
        ("trm_mlp", SUDOKU, 5_028_866),
        ("trm_att", SUDOKU, 6_828_034),
        ("trm_mlp_4layers", SUDOKU, 10_045_442),
        ("trm_dual", SUDOKU, 10_045_442),  # "w/ separate f_H, f_L": 2×2 MLP blocks, ≈10.05M
        ("hrm", SUDOKU, 27_275_266),  # = HRM#12's logged num_params
        ("trm_att", dict(vocab_size=12, seq_len=900), 6_829_058),  # ARC
        ("trm_att", dict(vocab_size=6, seq_len=900), 6_822_914),  # Maze
        ("trm_mlp", dict(vocab_size=6, seq_len=900), 18_795_522),
        ("trm_mlp", dict(vocab_size=12, seq_len=900), 18_801_666),
        ("hrm", dict(vocab_size=12, seq_len=900), 27_276_290),
    ],
)
def test_parameter_counts_match_the_spec(preset, shape, expected):
    with torch.device("meta"):  # counts only: no memory, no init cost
        model = RecursiveReasoningModel(ModelConfig.from_preset(preset, **shape))
    assert count_parameters(model) == expected


def test_puzzle_table_and_init_states_are_buffers_not_parameters():
    model = RecursiveReasoningModel(ModelConfig.from_preset("trm_mlp", num_puzzle_ids=7, **SUDOKU))
    names = {n for n, _ in model.named_parameters()}
    assert not any("puzzle_emb" in n or n.endswith("_init") for n in names)
    buffers = dict(model.named_buffers())
    assert buffers["puzzle_emb.weight"].shape == (7, 512)
    assert torch.count_nonzero(buffers["puzzle_emb.weight"]) == 0  # zero init (§1.2)
    assert buffers["y_init"].shape == (512,)


def test_multiscale_z_has_one_fixed_initial_vector_per_z():
    """Table 2's multi-scale variant: official trm_hier6 draws L1_init … L6_init separately
    (TRM_SPEC §4). Tied vectors would start every z_i equal, a different model."""
    cfg = ModelConfig.from_preset("trm_multiscale", hidden=16, heads=2, **SUDOKU)
    model = RecursiveReasoningModel(cfg)
    names = {n for n, _ in model.named_buffers() if "init" in n}
    assert names == {"y_init", "z_init"} | {f"z_init_{i}" for i in range(2, cfg.n + 1)}
    states = model.initial_states(2, torch.float32)
    assert len(states) == cfg.n + 1
    zs = torch.stack([s[0, 0] for s in states[1:]])
    assert torch.cdist(zs, zs).add(torch.eye(cfg.n)).min() > 0.1  # pairwise distinct
    # the initial vectors change what the model computes: tying them changes the logits
    batch = torch.randint(0, 11, (2, 81))
    ids = torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        own = model(states, batch, ids, track_grad=False).logits
        tied = tuple([states[0]] + [states[1]] * cfg.n)
        assert not torch.allclose(own, model(tied, batch, ids, track_grad=False).logits)
    # other latent layouts are unchanged: two vectors, as before
    plain = RecursiveReasoningModel(ModelConfig.from_preset("trm_mlp", hidden=16, **SUDOKU))
    assert {n for n, _ in plain.named_buffers() if "init" in n} == {"y_init", "z_init"}


def test_depth_and_forward_passes_follow_table1():
    trm = ModelConfig.from_preset("trm_mlp", **SUDOKU)
    assert trm.depth == 42 and trm.depth * trm.halt_max_steps == 672
    assert ModelConfig.from_preset("hrm", **SUDOKU).depth == 2 * 3 * 4  # 24 per step (§2.6)
    assert ModelConfig.from_preset("trm_mlp_4layers", **SUDOKU).depth == 48
    assert ModelConfig.from_preset("trm_t2_n2", **SUDOKU).depth == 12
    assert trm.forward_passes_per_step == 1
    assert ModelConfig.from_preset("trm_act_continue").forward_passes_per_step == 2


def test_q_head_starts_at_weight_zero_bias_minus_five():
    model = RecursiveReasoningModel(ModelConfig.from_preset("trm_att", **SUDOKU))
    assert torch.count_nonzero(model.q_head.weight) == 0
    assert torch.all(model.q_head.bias == -5.0)


def test_truncated_normal_init_has_target_std():
    model = RecursiveReasoningModel(ModelConfig.from_preset("trm_mlp", **SUDOKU))
    w = model.z_net.blocks[0].mlp.gate_up.weight
    assert abs(w.std().item() * 512**0.5 - 1.0) < 0.01  # LeCun: std = 1/sqrt(fan_in)
    assert w.abs().max().item() <= 2.0 / 512**0.5 * 1.2  # truncated near 2σ


def test_every_preset_builds():
    for name in MODEL_PRESETS:
        with torch.device("meta"):
            RecursiveReasoningModel(ModelConfig.from_preset(name, **SUDOKU))


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(n=0), "model.n=0"),
        (dict(T=0), "model.T=0"),
        (
            dict(mixer="conv"),
            "model.mixer='conv' is not allowed; choose one of ['attention', 'mlp']",
        ),
        (dict(net="triple"), "['single', 'dual']"),
        (dict(grad="half"), "['full', 'one_step']"),
        (dict(pos_encoding="alibi"), "['rope', 'learned', 'none']"),
        (dict(latents="many"), "['y_z', 'single_z', 'multiscale']"),
        (dict(hidden=100, heads=8), "divisible"),
        (dict(puzzle_emb_len=0, puzzle_emb_ndim=512), "model.puzzle_emb_len=0 slots"),
        (dict(halt_exploration_prob=1.5), "halt_exploration_prob"),
        (dict(latents="multiscale", n=1), "n >= 2"),
    ],
)
def test_invalid_model_configs_name_the_field(kwargs, fragment):
    with pytest.raises(ValueError) as err:
        ModelConfig(**kwargs)
    assert fragment in str(err.value)


def test_unknown_preset_and_unknown_field_list_what_exists():
    with pytest.raises(ValueError, match=r"unknown model preset 'trm_xl'; choose one of \["):
        ModelConfig.from_preset("trm_xl")
    with pytest.raises(ValueError, match=r"unknown model field\(s\) \['layer'\]"):
        ModelConfig.from_preset("trm_mlp", layer=3)
    with pytest.raises(ValueError, match=r"train\.loss=.mse."):
        TrainConfig(loss="mse")
    with pytest.raises(ValueError, match=r"train\.total_steps"):
        TrainConfig(lr_min_ratio=0.1)


def test_mlp_mixer_rejects_a_sequence_length_it_was_not_built_for(tiny_config):
    model = RecursiveReasoningModel(tiny_config)
    states = model.initial_states(2, torch.float32)
    wrong = torch.zeros(2, tiny_config.seq_len + 1, dtype=torch.long)
    with pytest.raises(ValueError, match=r"does not match model.seq_len=8"):
        model(states, wrong, torch.zeros(2, dtype=torch.long), track_grad=False)


def test_train_presets_follow_the_recipes():
    assert TrainConfig.from_preset("trm_sudoku").weight_decay == 1.0
    arc = TrainConfig.from_preset("trm_arc")
    assert (arc.weight_decay, arc.puzzle_emb_lr, arc.ema) == (0.1, 1e-2, True)
    assert TrainConfig.from_preset("hrm_sudoku").ema is False
    with pytest.raises(ValueError, match="unknown train preset 'adam'"):
        TrainConfig.from_preset("adam")
