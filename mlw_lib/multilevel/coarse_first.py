"""Coarse-first training: the bookkeeping of a budgeted stage that trains the coarse levels,
coarsest first, before the fine net (`FASCycle` takes the steps and prolongs the solutions).

Each coarse level gets an equal share of the stage's work budget plus what the levels before
it left unspent. With adaptive switching (`switch_threshold` r > 0) a level also hands over
early: every `switch_every` phases the held-out loss is probed, and once the loss decrease per
WU since the last probe falls below r times the first such rate on that level, it stops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields


@dataclass
class CoarseFirstStage:
    """Where the stage stands; `budget` (WU) is set by the trainer, the rest is state."""

    budget: float = 0.0
    root: int | None = None  # the level trained now: None before the stage, 0 once it is over
    spent: float = 0.0  # WU spent on `root`
    carry: float = 0.0  # WU that levels which stalled left unspent
    phases: int = 0  # phases taken on `root`
    probe: tuple[float, float] | None = None  # (held-out loss, total WU) at the last probe
    first_rate: float | None = None  # the first probed loss decrease per WU on `root`
    switches: list[dict] = field(default_factory=list)  # {level, work_units, spent, reason}

    @property
    def over(self) -> bool:
        return self.root == 0

    def count_phase(self, work: float) -> None:
        """One phase on `root` that cost `work` WU."""
        self.spent += work
        self.phases += 1

    def stalled(
        self,
        probe_loss: Callable[[], float | None],
        work_units: float,
        threshold: float,
        every: int,
    ) -> bool:
        """Adaptive switching: on every `every`-th phase, probe the held-out loss and say
        whether its decrease per WU since the last probe fell below `threshold` times the
        first such rate (a first rate <= 0 stalls at once). `work_units`: the total so far."""
        if not threshold or self.phases % every:
            return False
        loss = probe_loss()
        if loss is None:
            raise ValueError("switch_threshold needs a monitor batch (a validation split)")
        previous, self.probe = self.probe, (loss, work_units)
        if previous is None:
            return False
        rate = (previous[0] - loss) / max(work_units - previous[1], 1e-12)
        if self.first_rate is None:
            self.first_rate = rate
            return rate <= 0
        return rate < threshold * self.first_rate

    def hands_over(self, stalled: bool, coarse_levels: int, work_units: float) -> bool:
        """Whether `root` is done (it stalled, or spent its share); if so the switch is
        recorded and its unspent share carried to the next level."""
        share = self.budget / coarse_levels + self.carry
        if not stalled and self.spent < share - 1e-9:
            return False
        reason = "stalled" if stalled else "budget"
        self.switches.append(
            {"level": self.root, "work_units": work_units, "spent": self.spent, "reason": reason}
        )
        self.carry = max(share - self.spent, 0.0)
        return True

    def next_level(self) -> None:
        """Move to the next finer level."""
        self.root -= 1
        self.spent, self.phases, self.probe, self.first_rate = 0.0, 0, None, None

    def state_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "budget"}

    def load_state_dict(self, state: dict) -> None:
        for item in fields(self):
            if item.name in state:
                setattr(self, item.name, state[item.name])
