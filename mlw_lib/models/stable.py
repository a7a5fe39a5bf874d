"""Stable deep architectures of Haber & Ruthotto (2017): a network as the discretisation of an
ODE in depth, each layer one step of size h (arXiv:1705.03341, section 3).

Forms (K_j a square weight, or a stride-1 "same" convolution whose adjoint K_j^T is the
transposed convolution with the same kernel; f(v) = act(v + b_j), or act(BN(v)) with `norm`):

  resnet         Y_{j+1} = Y_j + h f(K_j Y_j)                      (forward Euler)
  antisymmetric  Y_{j+1} = Y_j + h f((K_j^T - K_j - gamma I) Y_j / 2)
  hamiltonian    Z_{j+1} = Z_j - h f(K_j^T Y_j),  Y_{j+1} = Y_j + h f(K_j Z_{j+1})   (Verlet,
                 Z_0 = 0; invertible)
  leapfrog       Y_{j+1} = 2 Y_j - Y_{j-1} + h^2 f(-K_j^T K_j Y_j)  (Y_{-1} = Y_0; reversible)

Unit group: the stream width, "width" (every layer reads and writes the same stream, so one
group spans the whole stack), present when an opening layer lifts the input to the stream.
A fully connected net without `width` is square, Y_0 = x: it has no unit group and width
multilevel does not apply to it. The conv form always opens with a conv to `width` channels.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from ..checks import choice, integer, number
from ..multilevel.groups import AxisBinding, Layout, Role, WidthModel
from .mlp import ACTIVATIONS

FORMS = ("resnet", "antisymmetric", "hamiltonian", "leapfrog")


class StableLayer(nn.Module):
    """One step of `form` on the stream state (y, aux): y (N, w) or (N, w, H, W); aux is Z
    (hamiltonian), Y_{j-1} (leapfrog) or None. `kernel` None: K is a (w, w) matrix; else a
    (w, w, kernel, kernel) convolution."""

    def __init__(
        self,
        form: str,
        width: int,
        h: float,
        gamma: float = 0.0,
        activation: str = "tanh",
        kernel: int | None = None,
        norm: bool = False,
    ) -> None:
        super().__init__()
        self.form, self.h, self.gamma, self.kernel = form, h, gamma, kernel
        self.act = ACTIVATIONS[activation]
        shape = (width, width) if kernel is None else (width, width, kernel, kernel)
        self.weight = nn.Parameter(torch.empty(shape))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)  # as nn.Linear / nn.Conv2d
        # the Verlet step's two stages normalise different signals: one BatchNorm each
        stages = 2 if form == "hamiltonian" else 1
        self.norms = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(stages if norm else 0))
        self.bias = None if norm else nn.Parameter(torch.zeros(width))

    # ------------------------------------------------------------------ operators
    def op(self, y: torch.Tensor) -> torch.Tensor:
        """K y."""
        if self.kernel is None:
            return F.linear(y, self.weight)
        return F.conv2d(y, self.weight, padding=self.kernel // 2)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """K^T y (for a conv: the transposed convolution, its exact adjoint)."""
        if self.kernel is None:
            return F.linear(y, self.weight.t())
        return F.conv_transpose2d(y, self.weight, padding=self.kernel // 2)

    def f(self, v: torch.Tensor, stage: int = 0) -> torch.Tensor:
        """act(v + b), or act(BN(v)) with norm (`stage` picks the Verlet stage's BN)."""
        if self.bias is None:
            return self.act(self.norms[stage](v))
        shape = (1, -1) + (1,) * (v.dim() - 2)
        return self.act(v + self.bias.view(shape))

    # ------------------------------------------------------------------ steps
    def forward(
        self, y: torch.Tensor, aux: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.h
        if self.form == "resnet":
            return y + h * self.f(self.op(y)), None
        if self.form == "antisymmetric":
            return y + h * self.f((self.adjoint(y) - self.op(y) - self.gamma * y) / 2), None
        if self.form == "hamiltonian":
            z = aux - h * self.f(self.adjoint(y), 0)
            return y + h * self.f(self.op(z), len(self.norms) - 1), z
        return 2 * y - aux + h * h * self.f(-self.adjoint(self.op(y))), y  # leapfrog

    def inverse(self, y: torch.Tensor, aux: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The state before this step, from the state after it (hamiltonian and leapfrog;
        exact with BatchNorm in eval mode)."""
        h = self.h
        if self.form == "hamiltonian":
            y_before = y - h * self.f(self.op(aux), len(self.norms) - 1)
            return y_before, aux + h * self.f(self.adjoint(y_before), 0)
        if self.form == "leapfrog":
            return aux, 2 * aux - y + h * h * self.f(-self.adjoint(self.op(aux)))
        raise ValueError(f"the {self.form} step has no closed-form inverse")


class StableNet(WidthModel):
    """x -> logits (N, num_classes) through `depth` stable layers of `form`.

    Fully connected (`conv=False`): x (N, inputs); `width` None keeps the stream at the input
    size (Y_0 = x, no unit group), an int lifts x with a linear layer. Convolutional: x (N,
    inputs, H, W), a `kernel` conv lifts it to `width` channels (required), the layers keep
    H x W (no downsampling; BatchNorm with `norm`), the head reads the stream average-pooled
    to pool x pool. Step `h` > 0; `gamma` >= 0 (antisymmetric only).
    """

    def __init__(
        self,
        form: str,
        inputs: int,
        num_classes: int,
        depth: int = 4,
        h: float = 0.1,
        width: int | None = None,
        gamma: float = 0.0,
        activation: str = "tanh",
        conv: bool = False,
        kernel: int = 3,
        norm: bool = True,
        pool: int = 4,
    ) -> None:
        super().__init__()
        choice("stable form", form, FORMS)
        choice("activation", activation, tuple(ACTIVATIONS))
        number("step h", h, 0.0, open_low=True)
        number("gamma", gamma, 0.0)
        for name, value in (("inputs", inputs), ("num_classes", num_classes), ("depth", depth)):
            integer(name, value, 1)
        if conv and width is None:
            raise ValueError("a convolutional stable net needs a width (stream channels)")
        if width is not None:
            integer("width", width, 1)
        if conv:
            integer("kernel", kernel, 1)
            integer("pool", pool, 1)
            if kernel % 2 == 0:
                raise ValueError(f"kernel must be odd (a 'same' convolution), got {kernel}")
        self.config = dict(
            form=form,
            inputs=inputs,
            num_classes=num_classes,
            depth=depth,
            h=h,
            width=width,
            gamma=gamma,
            activation=activation,
            conv=conv,
            kernel=kernel,
            norm=norm,
            pool=pool,
        )
        stream = width or inputs
        if conv:
            self.lift = nn.Conv2d(inputs, stream, kernel, padding=kernel // 2)
        else:
            self.lift = nn.Linear(inputs, stream) if width is not None else None
        self.layers = nn.ModuleList(
            StableLayer(form, stream, h, gamma, activation, kernel if conv else None, norm and conv)
            for _ in range(depth)
        )
        self.head = nn.Linear(stream * (pool * pool if conv else 1), num_classes)

    def stream(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The input checked and lifted: the initial state (Y_0, aux_0)."""
        conv, inputs = self.config["conv"], self.config["inputs"]
        if x.dim() != (4 if conv else 2) or x.shape[1] != inputs:
            expected = f"(N, {inputs}, H, W)" if conv else f"(N, {inputs})"
            raise ValueError(
                f"StableNet expects inputs of shape {expected}, got {tuple(x.shape)}; build it "
                f"with inputs (and conv) to match the data"
            )
        y = self.lift(x) if self.lift is not None else x
        form = self.config["form"]
        return y, {"hamiltonian": torch.zeros_like(y), "leapfrog": y}.get(form)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, aux = self.stream(x)
        for layer in self.layers:
            y, aux = layer(y, aux)
        return self.classify(y)

    def classify(self, y: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes) from the final stream y (average-pooled for a conv net)."""
        if self.config["conv"]:
            y = F.adaptive_avg_pool2d(y, self.config["pool"]).flatten(1)
        return self.head(y)

    # ------------------------------------------------------------------ unit groups
    def group_sizes(self) -> dict[str, int]:
        return {} if self.lift is None else {"width": self.config["width"]}

    def param_layout(self) -> Layout:
        if self.lift is None:
            return {}
        out, reads = AxisBinding("width", 0, Role.OUT), AxisBinding("width", 1, Role.IN)
        layout: Layout = {"lift.weight": (out,), "lift.bias": (out,)}
        for i, layer in enumerate(self.layers):
            layout[f"layers.{i}.weight"] = (out, reads)
            if layer.bias is not None:
                layout[f"layers.{i}.bias"] = (out,)
            for j in range(len(layer.norms)):
                for p in ("weight", "bias"):
                    layout[f"layers.{i}.norms.{j}.{p}"] = (AxisBinding("width", 0, Role.NORM),)
        pixels = self.config["pool"] ** 2 if self.config["conv"] else 1
        layout["head.weight"] = (AxisBinding("width", 1, Role.IN, pixels),)
        return layout

    def resized(self, sizes: dict[str, int]) -> StableNet:
        return StableNet(**{**self.config, "width": sizes["width"]})


def double_depth(model: StableNet) -> StableNet:
    """The same net with 2N layers and step h/2 (multilevel in depth): layer 2i+1 is old layer
    i, layer 2i the average of old layers i-1 and i (layer 0 copies old layer 0, its only
    neighbour). The inserted layers sample the depth-continuous weights K(t) half-way, so the
    output changes by O(h) (first order). Parameters and BatchNorm statistics both follow."""
    if not isinstance(model, StableNet):
        raise ValueError(
            f"double_depth needs a StableNet (a stack of stable layers), got {type(model).__name__}"
        )
    config = model.config
    like = next(model.parameters())
    deeper = StableNet(**{**config, "depth": 2 * config["depth"], "h": config["h"] / 2})
    deeper = deeper.to(like.device, like.dtype)
    for part in ("lift", "head"):
        if getattr(model, part) is not None:
            getattr(deeper, part).load_state_dict(getattr(model, part).state_dict())
    old = list(model.layers)
    for i, layer in enumerate(old):
        left = old[max(i - 1, 0)]
        deeper.layers[2 * i + 1].load_state_dict(layer.state_dict())
        deeper.layers[2 * i].load_state_dict(_average(left.state_dict(), layer.state_dict()))
    return deeper.train(model.training)


def _average(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Entrywise mean of two state dicts (integer buffers such as batch counts: the first's)."""
    return {k: (a[k] + b[k]) / 2 if a[k].is_floating_point() else copy.deepcopy(a[k]) for k in a}
