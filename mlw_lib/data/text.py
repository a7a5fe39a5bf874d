"""Text to padded token ids with a HuggingFace `tokenizers` WordPiece tokenizer.

Normalisation: HTML line breaks (`<br />`) become spaces, then BERT's normaliser (control
characters removed, lower-cased). Every sequence starts with [CLS], is cut to `max_len` tokens
and right-padded with [PAD] (id 0), so real tokens keep their positions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

PAD, UNK, CLS = "[PAD]", "[UNK]", "[CLS]"
PAD_ID = 0  # [PAD] is the first special token


def train_wordpiece(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """A WordPiece tokenizer of at most `vocab_size` tokens ([PAD], [UNK], [CLS] first),
    trained on `texts`."""
    tokenizer = Tokenizer(models.WordPiece(unk_token=UNK))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Replace(Regex(r"<br\s*/?>"), " "), normalizers.BertNormalizer(lowercase=True)]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=[PAD, UNK, CLS], show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


@dataclass(frozen=True)
class Encoded:
    """`ids` (N, max_len) int64: [CLS], the text's tokens, then [PAD]; `lengths` (N,) int64:
    each text's tokens before truncation, [CLS] included (> max_len: it was cut)."""

    ids: torch.Tensor
    lengths: torch.Tensor


def encode(tokenizer: Tokenizer, texts: Sequence[str], max_len: int) -> Encoded:
    """Token ids of `texts`, cut and padded to `max_len` (see `Encoded`)."""
    cls = tokenizer.token_to_id(CLS)
    encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
    ids = np.full((len(texts), max_len), PAD_ID, dtype=np.int64)
    lengths = np.empty(len(texts), dtype=np.int64)
    for row, encoding in enumerate(encodings):
        tokens = encoding.ids[: max_len - 1]
        ids[row, 0], ids[row, 1 : 1 + len(tokens)] = cls, tokens
        lengths[row] = 1 + len(encoding.ids)
    return Encoded(torch.from_numpy(ids), torch.from_numpy(lengths))


def tokens_of(tokenizer: Tokenizer, ids: torch.Tensor) -> list[str]:
    """The tokens of one sequence (T,) without its padding, e.g. for tick labels."""
    return [tokenizer.id_to_token(int(i)) for i in ids[ids != PAD_ID]]
