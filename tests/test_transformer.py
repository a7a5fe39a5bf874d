"""The transformer classifier: heads, FFN neurons and (optionally) d_model as unit groups.

DESIGN.md §5's invariants on attention and LayerNorm (duplicate heads / FFN neurons / residual
features coarsen exactly under `avg_sum`, first-order coherence, round trip, zero coarse steps),
padding that changes nothing, the functional head similarity, FLOPs of attention, and bad
input. Generated token data: these tests are about mechanics (and one learnable task).
"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import (
    VOCAB,
    assert_first_order_coherence,
    assert_round_trip,
    assert_zero_coarse_steps_change_nothing,
    make_cycle,
    matched_coarse,
    split_units,
    tokens,
)
from helpers import tiny_transformer as small

from mlw_lib.models.transformer import PAD_ID, TransformerClassifier
from mlw_lib.multilevel import (
    MultilevelConfig,
    match_model,
)
from mlw_lib.multilevel.groups import check_layout
from mlw_lib.multilevel.hierarchy import CoarseningError
from mlw_lib.multilevel.work import forward_backward_flops
from mlw_lib.training import TrainConfig, classification_loss, train


def duplicated(model: TransformerClassifier, g: torch.Generator) -> TransformerClassifier:
    """Every unit of every group split in two (`avg_sum`): the same function as `model`."""
    return split_units(model, "avg_sum", g)[0].eval()


def coarsened(fine: TransformerClassifier, convention: str, seed: int):
    transition, coarse = matched_coarse(fine, convention, seed)
    return transition, coarse.eval()


# 2. duplicate heads, FFN neurons, residual features: the coarse net is the same function ------
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("model_width", [False, True], ids=["heads+ffn", "heads+ffn+d_model"])
@pytest.mark.parametrize("similarity", ["functional", "weights"])
def test_duplicate_units_coarsen_exactly(seed, model_width, similarity):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    base = small(coarsen_model_width=model_width, head_similarity=similarity).eval()
    fine = duplicated(base, g)
    x = tokens(16, 12, seed)
    torch.testing.assert_close(fine(x), base(x), rtol=1e-9, atol=1e-9)  # exact construction
    transition, coarse = coarsened(fine, "avg_sum", seed)
    assert coarse.group_sizes() == base.group_sizes()
    assert (coarse(x) - fine(x)).abs().max() <= 1e-5
    assert transition.matchings["heads0"].n_coarse == base.config["heads"][0]


def test_the_duplicate_check_can_fail():
    """Under sum_avg, merged heads add their queries and keys: the scores change, so the
    coarse net of a duplicated one is not the same function."""
    torch.manual_seed(0)
    fine = duplicated(small().eval(), torch.Generator().manual_seed(0))
    _, coarse = coarsened(fine, "sum_avg", 0)
    x = tokens(16, 12, 0)
    assert (coarse(x) - fine(x)).abs().max() > 1e-3


# 1. round trip, 3. coherence, 4. zero coarse steps -------------------------------------------
@pytest.mark.parametrize("convention", ["sum_avg", "avg_sum"])
def test_round_trip_on_a_transformer(convention):
    assert_round_trip(small(coarsen_model_width=True), convention)


@pytest.mark.parametrize("convention", ["sum_avg", "avg_sum"])
@pytest.mark.parametrize("model_width", [False, True], ids=["heads+ffn", "heads+ffn+d_model"])
def test_first_order_coherence_on_a_transformer(convention, model_width):
    torch.manual_seed(2)
    fine_model = small(heads=4, ffn=8, coarsen_model_width=model_width).train()
    x = tokens(48, 12, 2)
    y = torch.randint(0, 3, (48,), generator=torch.Generator().manual_seed(3))
    batches = [(x[i : i + 16], y[i : i + 16]) for i in (0, 16, 32)]
    assert_first_order_coherence(fine_model, batches, convention)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_zero_coarse_steps_leave_a_transformer_unchanged(optimizer):
    torch.manual_seed(0)
    x, y = tokens(64, 12, 0), torch.randint(0, 3, (64,))
    assert_zero_coarse_steps_change_nothing(small(heads=4, ffn=8), x, y, optimizer)


# padding, attention maps, functional similarity ----------------------------------------------
@pytest.mark.parametrize("pooling", ["mean", "cls"])
@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_padding_changes_nothing(pooling, positions):
    torch.manual_seed(0)
    model = small(pooling=pooling, positions=positions, max_len=20).eval()
    x = tokens(8, 12, 5)
    longer = torch.cat([x, torch.zeros(8, 8, dtype=x.dtype)], dim=1)  # 8 more pads
    torch.testing.assert_close(model(longer), model(x), rtol=0, atol=1e-12)
    other = x.clone()
    other[:, -1] = torch.where(x[:, -1] == PAD_ID, 7, x[:, -1])  # a real token where a pad was
    changed = (model(other) - model(x)).abs().amax(dim=1) > 1e-9
    assert torch.equal(changed, x[:, -1] == PAD_ID)  # the check can fail: real tokens count


def test_attention_maps_are_distributions_over_real_tokens():
    torch.manual_seed(0)
    model = small(heads=[2, 3])
    x = tokens(5, 12, 1)
    maps = model.attention_maps(x)
    assert [tuple(m.shape) for m in maps] == [(5, 2, 12, 12), (5, 3, 12, 12)]
    for m in maps:
        torch.testing.assert_close(m.sum(-1), torch.ones_like(m.sum(-1)))
        assert float(m.masked_select((x == PAD_ID)[:, None, None, :]).abs().max()) == 0.0


def test_functional_head_features_ignore_a_rotation_that_weights_do_not():
    """Rotating one head's value space (V rows by R, W_O columns by R^T) keeps the function:
    the functional features stay, the weight features change."""
    torch.manual_seed(0)
    model = small(heads=2, head_dim=4).eval()
    before_f = model.head_features(0).clone()
    before_w = model.unit_features("heads0").clone()
    weights_model = copy.deepcopy(model)
    weights_model.config["head_similarity"] = "weights"
    before_weights = weights_model.unit_features("heads0").clone()
    x = tokens(8, 12, 3)
    out = model(x)
    rotation, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))
    with torch.no_grad():
        for m in (model, weights_model):
            a = m.blocks[0].attn
            a.v.weight[:4] = rotation @ a.v.weight[:4]
            a.v.bias[:4] = rotation @ a.v.bias[:4]
            a.out.weight[:, :4] = a.out.weight[:, :4] @ rotation.T
    torch.testing.assert_close(model(x), out)
    torch.testing.assert_close(model.head_features(0), before_f)
    torch.testing.assert_close(model.unit_features("heads0"), before_w)
    assert not torch.allclose(weights_model.unit_features("heads0"), before_weights)


def test_attention_flops_are_counted():
    """Linear layers' FLOPs grow with T, attention's with T^2: doubling T more than doubles."""
    model = small(max_len=24).float()
    y = torch.zeros(4, dtype=torch.int64)
    short = forward_backward_flops(model, (tokens(4, 12, 0, 12), y), classification_loss)
    long = forward_backward_flops(model, (tokens(4, 24, 0, 24), y), classification_loss)
    assert long > 2.05 * short


# training --------------------------------------------------------------------------------
def counting_task(n: int, seed: int):
    """Label 1 when token 3 occurs more often than token 4 (ties: 0): learnable by a
    transformer with mean pooling."""
    x = tokens(n, 16, seed, min_length=8)
    x[(x > 4) & (torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)) < 0.3)] = 3
    x[(x > 4) & (torch.rand(x.shape, generator=torch.Generator().manual_seed(seed + 1)) < 0.3)] = 4
    y = ((x == 3).sum(1) > (x == 4).sum(1)).long()
    return x, y


@pytest.mark.parametrize("levels", [1, 2])
def test_a_transformer_learns_with_and_without_levels(levels):
    from types import SimpleNamespace

    torch.manual_seed(0)
    (x, y), (xt, yt) = counting_task(1024, 0), counting_task(256, 1)
    data = SimpleNamespace(x_train=x, y_train=y, x_test=xt, y_test=yt)
    model = TransformerClassifier(
        VOCAB,
        2,
        d_model=32,
        layers=1,
        heads=4,
        ffn=32,
        max_len=16,
        dropout=0.0,
        attention_dropout=0.0,
        probe=x[:16],
    )
    config = TrainConfig(epochs=8, batch_size=32, optimizer="adamw", lr=3e-3, eval_every=8)
    result = train(model, data, config, MultilevelConfig(levels=levels))
    chance = max(float(yt.float().mean()), 1 - float(yt.float().mean()))
    assert result.history["test_accuracy"].iloc[-1] > chance + 0.15


# bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(d_model=10, heads=4), "must be one count that divides d_model=10"),
        (dict(coarsen_model_width=True, positions="sinusoidal"), "needs positions='learned'"),
        (dict(heads=[2, 2, 2]), "one per block"),
        (dict(pooling="max"), "unknown pooling"),
        (dict(dropout=1.0), "dropout must be a finite number"),
    ],
)
def test_bad_settings_are_refused(kwargs, message, refusals):
    what = f"TransformerClassifier(vocab, {', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
    with refusals.error(what, ValueError, message):
        TransformerClassifier(VOCAB, **(dict(layers=2) | kwargs))


def test_bad_tokens_are_refused(refusals):
    model = small()
    for what, x in (
        ("tokens longer than the model's max_len", tokens(2, 13, 0)),
        ("float inputs to the transformer", torch.rand(2, 12)),
        ("token ids outside the vocabulary", tokens(2, 12, 0) + VOCAB),
    ):
        with refusals.error(what, ValueError, r"expects token ids of shape \(N, T <= 12\)"):
            model(x)


def test_functional_similarity_without_probe_names_the_fix(refusals):
    model = small(probe=None)
    with refusals.error(
        "head_similarity='functional' without probe sequences", ValueError, "needs probe sequences"
    ):
        match_model(model, MultilevelConfig(levels=2), level=0, seed=0)


def test_heads_too_few_for_the_levels_are_refused(refusals):
    model = small(heads=2)
    x, y = tokens(32, 12, 0), torch.randint(0, 3, (32,))
    what = "2 heads per block coarsened to 3 levels"
    with refusals.error(what, CoarseningError, "group 'heads0' \\(width 2\\)"):
        make_cycle(model, MultilevelConfig(levels=3), x, y)


def test_an_inconsistent_residual_width_is_named():
    model = small(coarsen_model_width=True)
    check_layout(model)
    layout = model.param_layout()
    layout["blocks.1.fc2.weight"] = tuple(
        b for b in layout["blocks.1.fc2.weight"] if b.group != "model"
    )
    model.param_layout = lambda: layout
    with pytest.raises(ValueError, match=r"residual stream \(d_model\)") as error:
        check_layout(model)
    assert "blocks.1.fc2.weight (axis 0): not coarsened" in str(error.value)
