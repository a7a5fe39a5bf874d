"""Configs built from a notebook's parameters: every field is taken, no key is dropped silently."""

from __future__ import annotations

import pytest

from mlw_lib.multilevel import MultilevelConfig
from mlw_lib.training import TrainConfig

PARAMETERS = {
    "hidden": [64, 32],  # model: in `other`
    "levels": [1, 2],  # a list in the notebook: overridden per method
    "cycle": "W",
    "ratio": 0.4,
    "nu_post": 3,
    "epochs": 2.5,
    "lr": [0.1, 0.2],
    "optimizer": "adam",
    "device": "cpu",
    "seeds": [0, 1],
}
OTHER = {"hidden", "seeds"}


def test_from_params_takes_every_field_of_its_config() -> None:
    multilevel = MultilevelConfig.from_params(PARAMETERS, other=OTHER, levels=2, model_level=1)
    assert (multilevel.levels, multilevel.model_level) == (2, 1)
    assert (multilevel.cycle, multilevel.ratio, multilevel.nu_post) == ("W", 0.4, 3)
    train = TrainConfig.from_params(PARAMETERS, other=OTHER)
    assert (train.epochs, train.lr, train.optimizer) == (2.5, [0.1, 0.2], "adam")
    assert TrainConfig.from_params(PARAMETERS, other=OTHER, epochs=7).epochs == 7


@pytest.mark.parametrize("build", [TrainConfig.from_params, MultilevelConfig.from_params])
def test_from_params_rejects_a_key_that_is_no_field_and_not_other(build) -> None:
    with pytest.raises(ValueError, match=r"nu_psot.*other="):
        build({**PARAMETERS, "nu_psot": 2, "levels": 2}, other=OTHER)
    with pytest.raises(ValueError, match="hidden, seeds"):
        build({**PARAMETERS, "levels": 2})
