"""Speed and memory of the transformer on IMDB reviews (2,048 / 500 reviews; --quick: 512 /
128), the model of params/paper/03_transformer_imdb.yaml on 32 batches per epoch.

2 blocks, d_model 128, 4 heads of 32, FFN 512, max_len 256, vocabulary 16,000, batch 64,
AdamW (lr 5e-4, weight decay 0.01), dropout 0.1 (residual and attention), fp32. The
measurements of bench_mlp.py on runs of 2 epochs of work (--quick: 0.5): (a) the single-level
run against its FLOP bound at the fastest matmul rate of this run (the FFN's GEMM, and a
square one), <= 2x; (x) dropout's share of that run: the same run with dropout 0 is faster by
this share (information); (y) the run of (a) with glibc's default malloc (information); (b1)
the machinery share of 2- and 3-level V-cycles, <= 10%; (b2) our step per level against the
same module stepped by plain PyTorch (cross-entropy, fused AdamW), <= 1.15x per coarse level;
(c) peak RSS of a 3-level and of a 2-level / a single-level epoch, <= 1.3x; and with
per-block gradient checkpointing (information).

Run: `make benchmark-transformer` or `.venv/bin/python benchmarks/bench_transformer.py
[--quick]`.
"""

import copy

import common  # first: it sets MLW_DATA_MIRROR and TQDM_DISABLE before torch loads

# isort: split
import torch

from mlw_lib.data import load_dataset
from mlw_lib.models import TransformerClassifier
from mlw_lib.training import TrainConfig, train

BATCH, MAX_LEN, D_MODEL, FFN = 64, 256, 128, 512


def load(quick: bool):
    """IMDB subsets as token ids: x (N, 256) int64, y (N,)."""
    train_subset, test_subset = (512, 128) if quick else (2048, 500)
    return load_dataset(
        "imdb",
        train_subset=train_subset,
        test_subset=test_subset,
        vocab_size=16000,
        max_len=MAX_LEN,
    )


def new_model(data, dropout: float = 0.1) -> torch.nn.Module:
    torch.manual_seed(0)
    return TransformerClassifier(
        16000,
        2,
        d_model=D_MODEL,
        layers=2,
        heads=4,
        head_dim=32,
        ffn=FFN,
        max_len=MAX_LEN,
        dropout=dropout,
        attention_dropout=dropout,
        probe=data.x_train[:32],
    )


def config(epochs: float, device: torch.device) -> TrainConfig:
    return TrainConfig(
        epochs=epochs,
        batch_size=BATCH,
        optimizer="adamw",
        lr=5e-4,
        weight_decay=0.01,
        device=str(device),
        eval_every=epochs,
        eval_batch_size=256,
    )


def dropout_section(data, device: torch.device, epochs: float) -> tuple[dict, list]:
    """(x) Wall-clock of the single-level run with and without dropout."""
    seconds = {}
    for rate in (0.1, 0.0):
        result = train(new_model(data, rate), data, config(epochs, device))
        seconds[rate] = result.meter.wall_time
    share = 1 - seconds[0.0] / seconds[0.1]
    figure = (
        f"(x) dropout's share of a single-level run: {seconds[0.1]:.2f} s with dropout 0.1, "
        f"{seconds[0.0]:.2f} s without"
    )
    return {"seconds": seconds, "share": share}, [common.info(figure, common.percent(share))]


BENCH = common.Bench(
    name="bench_transformer",
    title="bench_transformer: transformer 2 x (d_model 128, 4 heads x 32, FFN 512) on IMDB, "
    "max_len 256, batch 64, AdamW, dropout 0.1, fp32",
    load=load,
    new_model=new_model,
    config=config,
    bare_copy=copy.deepcopy,
    gemms={"FFN fc1 16384x128 @ 128x512": (BATCH * MAX_LEN, D_MODEL, FFN)},
    epoch_target=2.0,
    epochs=(2.0, 0.5),
    repeats=1,
    memory_target=1.3,
    extra=dropout_section,
)

if __name__ == "__main__":
    common.run(BENCH, __doc__, __file__)
