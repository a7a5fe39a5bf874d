"""Plain training of a whole stable net in one process: the baseline the parallel methods are
timed against (SGD with momentum on the same minibatch stream; its speed comes from torch's
threads, `torch.set_num_threads`)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ..models.stable import StableNet
from ..training.batches import BatchStream
from .synthetic import SyntheticConfig


class Backprop:
    """One minibatch per `step`: forward, backward, an SGD step of every parameter of
    `model` (in place). Its settings are SyntheticConfig's (`sg_lr` unused), so it is the
    oracle run of `SyntheticGradients` in one process."""

    def __init__(self, model: StableNet, data, config: SyntheticConfig) -> None:
        self.model = model
        self.stream = BatchStream(data.x_train, data.y_train, config.batch_size, config.seed)
        self.optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)

    def step(self) -> None:
        x, y = self.stream.next()
        self.optimizer.zero_grad()
        F.cross_entropy(self.model(x), y).backward()
        self.optimizer.step()
