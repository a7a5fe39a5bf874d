"""Training a stable net in parallel over layers, on torch.distributed (torchrun, gloo):
Parallel Variable Distribution (`pvd.py`) and synthetic gradients (`synthetic.py`), each
also runnable serially in one process, plain one-process training as their baseline
(`backprop.py`), and their timed loop (`timing.py`). Entry point:
`torchrun --nproc-per-node 2 -m mlw_lib.parallel -p method pvd ...` (`__main__.py`)."""

from .backprop import Backprop
from .pvd import PVD, PVDConfig, partition
from .synthetic import SyntheticConfig, SyntheticGradient, SyntheticGradients, halves
from .timing import timed_run

__all__ = [
    "Backprop",
    "PVD",
    "PVDConfig",
    "SyntheticConfig",
    "SyntheticGradient",
    "SyntheticGradients",
    "halves",
    "partition",
    "timed_run",
]
