"""The tasks and named variants of notebook 06."""

from __future__ import annotations

from dataclasses import fields
from types import SimpleNamespace

import pytest
import torch

from mlw_lib.multilevel import MultilevelConfig
from mlw_lib.tasks import build_task_model, load_task_data
from mlw_lib.variants import VARIANTS, variant_config, variant_methods


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_a_variant_sets_its_fields_and_keeps_the_rest_of_the_base(name):
    base = MultilevelConfig(levels=3, nu_post=2, batches_per_phase=3, seed=5)
    config = variant_config(name, base)
    for field in fields(MultilevelConfig):
        expected = VARIANTS[name].get(field.name, getattr(base, field.name))
        assert getattr(config, field.name) == expected, field.name


def test_variant_methods_are_named_by_variant_and_levels_and_refuse_bad_lists():
    methods = variant_methods(["fas", "adaptive"], MultilevelConfig(levels=2))
    assert list(methods) == ["fas, 2 levels", "adaptive, 2 levels"]
    assert methods["adaptive, 2 levels"].switch_threshold > 0
    with pytest.raises(ValueError, match="unknown variant 'fast'; choose from"):
        variant_methods(["fast"], MultilevelConfig(levels=2))
    with pytest.raises(ValueError, match="distinct names"):
        variant_methods(["fas", "fas"], MultilevelConfig(levels=2))


@pytest.mark.parametrize(
    ("task", "x", "groups"),
    [
        ("mlp_mnist", torch.randn(3, 784), {"hidden0": 32, "hidden1": 16}),
        ("resnet_fashion_mnist", torch.randn(3, 1, 28, 28), None),
        ("transformer_imdb", torch.randint(1, 50, (3, 16)), None),
    ],
)
def test_task_models_scale_with_the_width_and_classify(task, x, groups):
    data = SimpleNamespace(
        tokenizer=SimpleNamespace(get_vocab_size=lambda: 50), x_train=torch.randint(1, 50, (40, 16))
    )
    model = build_task_model(task, 32, data)
    assert model(x).shape == (3, 2 if task == "transformer_imdb" else 10)
    sizes = model.group_sizes()
    if groups is not None:
        assert sizes == groups
    wider = build_task_model(task, 64, data).group_sizes()
    assert all(wider[g] == 2 * n for g, n in sizes.items() if not g.startswith("heads"))


def test_task_data_is_the_tasks_dataset_and_bad_settings_are_refused():
    data = load_task_data("mlp_mnist", 100, 50)
    assert data.info.name == "MNIST" and len(data.x_train) == 100
    with pytest.raises(ValueError, match="unknown task 'cifar'; choose one of"):
        load_task_data("cifar")
    with pytest.raises(ValueError, match="width must be a multiple of 4"):
        build_task_model("mlp_mnist", 30, data)
