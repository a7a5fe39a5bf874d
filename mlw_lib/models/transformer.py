"""Transformer encoder classifier for token sequences (DESIGN.md §4.6).

Pre-LN blocks: x + Attention(LN x), then x + FFN(LN x) with GELU; a final LN, pooling (mean
over real tokens, or the first token, [CLS]) and a linear head. Token id 0 is [PAD]: padded
positions are never attended to and never pooled, so they cannot change a real token's output.

Unit groups: "heads{b}" (the heads of block b: the rows of Q, K and V and the columns of W_O
of one head move together; head_dim stays fixed, so the 1/sqrt(head_dim) scale is unchanged)
and "ffn{b}" (its FFN neurons). `coarsen_model_width=True` adds "model", the residual width
d_model: one group shared by the token and position embeddings, every LayerNorm, every layer
that writes into the residual stream and every layer that reads it (through a LayerNorm).

Heads are matched by what they compute (`head_similarity="functional"`): a head's feature is
its contribution to the residual stream, W_O[:, head] . head output, on fixed probe sequences
(pad positions left out). Their weights are a poor feature: a head computes the same function
after any rotation R of its value space (V_h -> R V_h, W_O[:, head] -> W_O[:, head] R^T) and
any invertible map of its query/key space, so two heads that compute the same thing can have
weights of cosine near 0. `head_similarity="weights"` (cosine of the Q, K, V rows) is there to
compare.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .. import checks
from ..modes import in_mode
from ..multilevel.groups import AxisBinding, Layout, Role, WidthModel
from .mlp import check_widths

PAD_ID = 0
POSITIONS = ("learned", "sinusoidal")
POOLINGS = ("mean", "cls")
HEAD_SIMILARITIES = ("functional", "weights")


def sinusoidal_positions(max_len: int, d_model: int) -> torch.Tensor:
    """The fixed sin/cos position table of Vaswani et al. (2017): (max_len, d_model)."""
    position = torch.arange(max_len, dtype=torch.float64)[:, None]
    rate = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(1e4) / d_model))
    table = torch.zeros(max_len, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate)[:, : d_model // 2]
    return table.float()


class SelfAttention(nn.Module):
    """x (N, T, d_model), pad (N, T) bool (True at padding) -> (N, T, d_model), with `heads`
    heads of `head_dim`. Written out (not fused) so that its FLOPs are counted and its
    attention maps are the ones the forward pass used."""

    def __init__(self, d_model: int, heads: int, head_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.q, self.k, self.v = (nn.Linear(d_model, heads * head_dim) for _ in range(3))
        self.out = nn.Linear(heads * head_dim, d_model)
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor, projection: nn.Linear) -> torch.Tensor:
        """(N, T, d_model) -> (N, heads, T, head_dim)."""
        return projection(x).unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)

    def attend(self, x: torch.Tensor, pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Head outputs (N, heads, T, head_dim) and attention probabilities (N, heads, T, T)."""
        q, k, v = (self._split(x, projection) for projection in (self.q, self.k, self.v))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        probs = scores.masked_fill(pad[:, None, None, :], float("-inf")).softmax(dim=-1)
        return self.dropout(probs) @ v, probs

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        return self.out(self.attend(x, pad)[0].transpose(1, 2).flatten(2))

    def head_contributions(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """Each head's share of the output (bias left out): (heads, N, T, d_model)."""
        outputs = self.attend(x, pad)[0]
        w_out = self.out.weight.unflatten(1, (self.heads, self.head_dim))  # (d_model, H, dh)
        return torch.einsum("nhtd,mhd->hntm", outputs, w_out)


class EncoderBlock(nn.Module):
    """Pre-LN block: x (N, T, d_model) -> x + Attn(LN1 x) -> x + FC2(GELU(FC1(LN2 x)))."""

    def __init__(
        self, d_model: int, heads: int, head_dim: int, ffn: int, dropout: float, attn_dropout: float
    ) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, heads, head_dim, attn_dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc1, self.fc2 = nn.Linear(d_model, ffn), nn.Linear(ffn, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.ln1(x), pad))
        return x + self.dropout(self.fc2(F.gelu(self.fc1(self.ln2(x)))))


def per_block(value: int | list[int], layers: int, what: str) -> list[int]:
    """An int for every block, or a list with one per block: positive integers."""
    values = check_widths([value] * layers if isinstance(value, int) else value, what)
    if len(values) != layers:
        raise ValueError(f"{what} must be one int or a list of {layers} (one per block): {value}")
    return values


class TransformerClassifier(WidthModel):
    """tokens (N, T) int64, T <= max_len, [PAD] = 0 -> logits (N, num_classes).

    `heads` and `ffn`: per block (an int is used for every block); `head_dim` defaults to
    d_model / heads (coarse models keep the fine head_dim). `probe`: (n, T) token ids
    of training sequences for the functional head similarity (see the module docstring);
    coarse models built by `resized` share it.
    """

    has_blocks = True

    def __init__(
        self,
        vocab_size: int,
        num_classes: int = 2,
        d_model: int = 128,
        layers: int = 2,
        heads: int | list[int] = 4,
        head_dim: int | None = None,
        ffn: int | list[int] = 256,
        max_len: int = 256,
        positions: str = "learned",
        pooling: str = "mean",
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        coarsen_model_width: bool = False,
        head_similarity: str = "functional",
        probe: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("vocab_size", vocab_size, 2),
            ("num_classes", num_classes, 1),
            ("d_model", d_model, 2),
            ("layers", layers, 1),
            ("max_len", max_len, 1),
        ):
            checks.integer(name, value, low)
        for name, value in (("dropout", dropout), ("attention_dropout", attention_dropout)):
            checks.number(name, value, 0.0, 1.0, open_high=True)
        checks.choice("positions", positions, POSITIONS)
        checks.choice("pooling", pooling, POOLINGS)
        checks.choice("head_similarity", head_similarity, HEAD_SIMILARITIES)
        checks.flag("coarsen_model_width", coarsen_model_width)
        if coarsen_model_width and positions == "sinusoidal":
            raise ValueError(
                "coarsen_model_width=True needs positions='learned': a fixed sinusoidal table "
                "cannot follow a coarsened d_model"
            )
        heads, ffn = per_block(heads, layers, "heads"), per_block(ffn, layers, "ffn")
        if head_dim is None:
            if d_model % heads[0] or len(set(heads)) > 1:
                raise ValueError(
                    f"heads={heads} must be one count that divides d_model={d_model} when "
                    "head_dim is not given; choose such a count or set head_dim"
                )
            head_dim = d_model // heads[0]
        checks.integer("head_dim", head_dim, 1)
        self.config = dict(
            vocab_size=vocab_size,
            num_classes=num_classes,
            d_model=d_model,
            layers=layers,
            heads=heads,
            head_dim=head_dim,
            ffn=ffn,
            max_len=max_len,
            positions=positions,
            pooling=pooling,
            dropout=dropout,
            attention_dropout=attention_dropout,
            coarsen_model_width=coarsen_model_width,
            head_similarity=head_similarity,
        )
        self.probe = probe
        self.embed = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.embed.weight, std=0.02)
        if positions == "learned":
            self.positions = nn.Embedding(max_len, d_model)
            nn.init.normal_(self.positions.weight, std=0.02)
        else:
            self.register_buffer("position_table", sinusoidal_positions(max_len, d_model), False)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            EncoderBlock(d_model, h, head_dim, f, dropout, attention_dropout)
            for h, f in zip(heads, ffn, strict=True)
        )
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    # ------------------------------------------------------------------ forward
    def check_tokens(self, tokens: torch.Tensor) -> None:
        """Raise ValueError unless tokens is (N, T) integer ids < vocab_size, T <= max_len."""
        vocab, max_len = self.config["vocab_size"], self.config["max_len"]
        ok = tokens.dim() == 2 and not tokens.is_floating_point() and tokens.shape[1] <= max_len
        if ok and tokens.numel():
            ok = 0 <= int(tokens.min()) and int(tokens.max()) < vocab
        if not ok:
            raise ValueError(
                f"TransformerClassifier expects token ids of shape (N, T <= {max_len}) in "
                f"[0, {vocab}), got {tuple(tokens.shape)} {tokens.dtype}; load text with the "
                f"same max_len and vocab_size as the model (e.g. load_imdb(max_len=...))"
            )

    def embed_tokens(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedded tokens plus positions (N, T, d_model) and the padding mask (N, T)."""
        length = tokens.shape[1]
        if self.config["positions"] == "learned":
            table = self.positions.weight[:length]
        else:
            table = self.position_table[:length]
        return self.dropout(self.embed(tokens) + table), tokens == PAD_ID

    def pool(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """(N, T, d_model) -> (N, d_model): the mean over real tokens, or the first token."""
        if self.config["pooling"] == "cls":
            return x[:, 0]
        real = (~pad).unsqueeze(-1).to(x.dtype)
        return (x * real).sum(dim=1) / real.sum(dim=1).clamp_min(1.0)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        self.check_tokens(tokens)
        x, pad = self.embed_tokens(tokens)
        for block in self.blocks:
            x = self.run_block(block, x, pad)
        return self.head(self.pool(self.ln(x), pad))

    @torch.no_grad()
    def attention_maps(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """Attention probabilities of every block in eval mode: [(N, heads_b, T, T)]."""
        maps = []
        with in_mode(self, training=False):
            x, pad = self.embed_tokens(tokens)
            for block in self.blocks:
                maps.append(block.attn.attend(block.ln1(x), pad)[1])
                x = block(x, pad)
        return maps

    # ------------------------------------------------------------------ unit groups
    def group_sizes(self) -> dict[str, int]:
        heads = {f"heads{b}": h for b, h in enumerate(self.config["heads"])}
        ffn = {f"ffn{b}": f for b, f in enumerate(self.config["ffn"])}
        model = {"model": self.config["d_model"]} if self.config["coarsen_model_width"] else {}
        return heads | ffn | model

    def residual_axes(self) -> list[tuple[str, int, Role]]:
        """Every (parameter, axis, role) indexed by d_model: the "model" group's axes."""
        axes = [("embed.weight", 1, Role.OUT)]
        if self.config["positions"] == "learned":
            axes.append(("positions.weight", 1, Role.OUT))
        for b in range(self.config["layers"]):
            p = f"blocks.{b}"
            for name in (f"{p}.ln1", f"{p}.ln2"):
                axes += [(f"{name}.weight", 0, Role.NORM), (f"{name}.bias", 0, Role.NORM)]
            for name in (f"{p}.attn.q", f"{p}.attn.k", f"{p}.attn.v", f"{p}.fc1"):
                axes.append((f"{name}.weight", 1, Role.IN_NORMALIZED))  # reads LN output
            for name in (f"{p}.attn.out", f"{p}.fc2"):  # writes into the residual stream
                axes += [(f"{name}.weight", 0, Role.OUT), (f"{name}.bias", 0, Role.OUT)]
        axes += [("ln.weight", 0, Role.NORM), ("ln.bias", 0, Role.NORM)]
        return axes + [("head.weight", 1, Role.IN_NORMALIZED)]

    def param_layout(self) -> Layout:
        layout: Layout = {}

        def bind(name: str, group: str, axis: int, role: Role, unit_size: int = 1) -> None:
            layout[name] = layout.get(name, ()) + (AxisBinding(group, axis, role, unit_size),)

        dh = self.config["head_dim"]
        for b in range(self.config["layers"]):
            p = f"blocks.{b}"
            for name in (f"{p}.attn.q", f"{p}.attn.k", f"{p}.attn.v"):
                bind(f"{name}.weight", f"heads{b}", 0, Role.OUT, dh)
                bind(f"{name}.bias", f"heads{b}", 0, Role.OUT, dh)
            bind(f"{p}.attn.out.weight", f"heads{b}", 1, Role.IN, dh)
            bind(f"{p}.fc1.weight", f"ffn{b}", 0, Role.OUT)
            bind(f"{p}.fc1.bias", f"ffn{b}", 0, Role.OUT)
            bind(f"{p}.fc2.weight", f"ffn{b}", 1, Role.IN)
        if self.config["coarsen_model_width"]:
            for name, axis, role in self.residual_axes():
                bind(name, "model", axis, role)
        return layout

    def tied_axes(self) -> list[tuple[str, list[tuple[str, int]]]]:
        axes = [(name, axis) for name, axis, _ in self.residual_axes()]
        return [("the residual stream (d_model)", axes)]

    def unit_features(self, group: str) -> torch.Tensor:
        """Heads (functional similarity): (heads, probe tokens x d_model); else the default."""
        if group.startswith("heads") and self.config["head_similarity"] == "functional":
            return self.head_features(int(group.removeprefix("heads")))
        return super().unit_features(group)

    @torch.no_grad()
    def head_features(self, block: int) -> torch.Tensor:
        """Each head of `block`'s contribution to the residual stream on the probe sequences,
        in eval mode, pad positions left out: (heads, n_real_tokens * d_model)."""
        if self.probe is None:
            raise ValueError(
                "head_similarity='functional' needs probe sequences: build the model with "
                "probe=<(n, T) token ids of training sequences>, or use head_similarity='weights'"
            )
        with in_mode(self, training=False):
            x, pad = self.embed_tokens(self.probe.to(self.embed.weight.device))
            for earlier in self.blocks[:block]:
                x = earlier(x, pad)
            attn = self.blocks[block].attn
            contributions = attn.head_contributions(self.blocks[block].ln1(x), pad)
        return contributions[:, ~pad].flatten(1)

    def resized(self, sizes: dict[str, int]) -> TransformerClassifier:
        layers = range(self.config["layers"])
        return TransformerClassifier(
            **{
                **self.config,
                "heads": [sizes[f"heads{b}"] for b in layers],
                "ffn": [sizes[f"ffn{b}"] for b in layers],
                "d_model": sizes.get("model", self.config["d_model"]),
            },
            probe=self.probe,
        )
