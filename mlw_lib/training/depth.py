"""Coarse-to-fine in depth (multilevel in depth, for stable nets): train the net at depth
N / 2^d with step h * 2^d, double its depth `d` times during the run (`double_depth`: each
inserted layer the average of its neighbours, h halved), and end at the model of interest
(depth N, step h). Each stage's steps are charged by their FLOPs, like the width levels."""

from __future__ import annotations

from ..models.stable import StableNet, double_depth


def shallow_start(model: StableNet, doublings: int) -> StableNet:
    """A freshly initialised `model` architecture at depth N / 2^doublings and step
    h * 2^doublings (the same depth-continuous horizon N h)."""
    if not isinstance(model, StableNet):
        raise ValueError(
            f"depth_doublings needs a StableNet (a stack of stable layers) whose depth can "
            f"double; got {type(model).__name__}: set depth_doublings=0"
        )
    depth, scale = model.config["depth"], 2**doublings
    if depth % scale:
        raise ValueError(
            f"depth_doublings={doublings} needs a depth divisible by 2^{doublings} = {scale}; "
            f"the model has {depth} layers"
        )
    config = model.config
    return StableNet(**{**config, "depth": depth // scale, "h": config["h"] * scale})


def switch_points(doublings: int, fractions: list[float] | None, budget: float) -> list[float]:
    """Work (WU) after which each doubling happens: `fractions` of the `budget`, by default
    evenly spaced (stage s of d + 1 gets an equal share of the work)."""
    fractions = fractions or [(s + 1) / (doublings + 1) for s in range(doublings)]
    return [f * budget for f in fractions]


def grow(current: StableNet, final: StableNet) -> StableNet:
    """`current` doubled in depth; when that reaches the model of interest's depth, loaded
    into `final` itself (so the net the caller passed in ends trained)."""
    deeper = double_depth(current)
    if deeper.config["depth"] != final.config["depth"]:
        return deeper
    final.load_state_dict(deeper.state_dict())
    return final.train(current.training)


def doublings_done(saved: dict, start: StableNet) -> int:
    """How many doublings the net of a saved state dict had from the depth of `start` (0 for
    a net that is not a StableNet)."""
    if not isinstance(start, StableNet):
        return 0
    depth = len({key.split(".")[1] for key in saved if key.startswith("layers.")})
    return (depth // start.config["depth"]).bit_length() - 1
