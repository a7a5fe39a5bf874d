"""One checkpoint format: a run's `TrainingState` as plain data, loaded with weights_only=True.

The state holds the fine model and optimizer, the hierarchy (operators and counters), the batch
stream, the work meter, the RNG states (as tensors and ints), the history rows (plain floats)
and the next evaluation point; `save_checkpoint` adds the run's config. Files are written
atomically (temp file + rename): a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

import numpy as np
import torch

from ..multilevel import FASCycle, WorkMeter
from .batches import BatchStream


def rng_states() -> dict:
    """torch, numpy, python (and CUDA) RNG states as tensors and plain ints."""
    _, keys, position, has_gauss, cached = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position)},
        "numpy_gauss": [int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    keys = states["numpy"]["keys"].numpy().astype(np.uint32)
    has_gauss, cached = states["numpy_gauss"]
    np.random.set_state(("MT19937", keys, states["numpy"]["position"], has_gauss, cached))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _plain(value):
    """A history value as a python float/int/str (numpy scalars and None become floats)."""
    if value is None:
        return math.nan
    if isinstance(value, np.generic):
        return value.item()
    return value


class TrainingState:
    """Everything a resumed run needs; `rows` is the history, `next_eval` the next
    evaluation point in work units."""

    def __init__(
        self, fas: FASCycle, stream: BatchStream, meter: WorkMeter, next_eval: float
    ) -> None:
        self.fas, self.stream, self.meter = fas, stream, meter
        self.rows: list[dict] = []
        self.next_eval = next_eval

    def state_dict(self) -> dict:
        fine = self.fas.levels[0]
        return {
            "model": fine.model.state_dict(),
            "optimizer": fine.optimizer.state_dict(),
            "multilevel": self.fas.state_dict(),
            "stream": self.stream.state_dict(),
            "meter": self.meter.state_dict(),
            "rng": rng_states(),
            "history": [{k: _plain(v) for k, v in row.items()} for row in self.rows],
            "next_eval": float(self.next_eval),
        }

    def load_state_dict(self, state: dict) -> None:
        fine = self.fas.levels[0]
        fine.model.load_state_dict(state["model"])
        self.fas.load_state_dict(state["multilevel"])
        fine.optimizer.load_state_dict(state["optimizer"])
        self.stream.load_state_dict(state["stream"])
        self.meter.load_state_dict(state["meter"])
        restore_rng_states(state["rng"])
        self.rows = [dict(row) for row in state["history"]]
        self.next_eval = float(state["next_eval"])


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """Write `state` to `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


# Settings a resumed run may change: a longer budget, another device, the evaluation batch size.
RESUMABLE_CHANGES = {"train.epochs", "train.device", "train.eval_batch_size"}


class ResumeMismatchError(ValueError):
    """The checkpoint was written by a run with other settings than the one resuming it."""


def _flat(config: dict, prefix: str = "") -> dict[str, object]:
    """{"train": {"lr": 0.1}} -> {"train.lr": 0.1}; tuples become lists (as once saved)."""
    flat: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, f"{name}."))
        else:
            flat[name] = list(value) if isinstance(value, tuple) else value
    return flat


def check_resumable(saved: dict, run_config: dict, path: str | Path) -> None:
    """Raise ResumeMismatchError naming every setting in which the run that wrote the
    checkpoint `saved` (at `path`) differs from `run_config`, the run resuming it."""
    if "config" not in saved:
        raise ResumeMismatchError(f"checkpoint {path} records no settings; start a fresh run")
    old, new = _flat(saved["config"]), _flat(run_config)
    names = sorted((old.keys() | new.keys()) - RESUMABLE_CHANGES)
    changed = [k for k in names if old.get(k, "unset") != new.get(k, "unset")]
    if changed:
        diffs = ", ".join(
            f"{k} {old.get(k, 'unset')!r} (checkpoint) vs {new.get(k, 'unset')!r} (now)"
            for k in changed
        )
        raise ResumeMismatchError(
            f"checkpoint {path} was written by a run with other settings: {diffs}. Resume "
            "with the checkpoint's settings, or start a fresh run (resume=False, or another "
            "checkpoint path)"
        )


def load_checkpoint(path: str | Path) -> dict:
    """The saved state (weights_only=True: tensors and plain data only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location="cpu", weights_only=True)
