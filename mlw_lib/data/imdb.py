"""IMDB movie reviews (Maas et al. 2011, 25,000 train / 25,000 test, positive or negative) as
padded token ids, with a WordPiece tokenizer trained on the training reviews only.

Archives, tried in order, md5-checked in the data root or copied from the mirror: the official
`imdb/aclImdb_v1.tar.gz`, then the mirror's repack of its labeled reviews
`imdb/aclImdb_labeled_text.tar.gz` (same `aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt`
files; see shared/datasets/README.md); with neither, the official archive is downloaded.
The reviews are read straight from the archive (never extracted).

Order: each split sorted by (label, review id), then shuffled by a fixed permutation, so that
a subset (the first N reviews) is a random, reproducible mix of both labels.

Cache: `<data root>/imdb/tokenized/<archive md5>-train<N>-vocab<V>/` holds the tokenizer
(`tokenizer.json`, with `settings.json`) and the encoded splits (`max_len<L>-test<M>.pt`),
so that a later load with the same settings neither reads the archive nor trains again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tarfile
from pathlib import Path

import torch
from tokenizers import Tokenizer

from mlw_lib import checks
from mlw_lib.data.dataset import InMemoryDataset, subset_sizes
from mlw_lib.data.files import DataUnavailableError, Files
from mlw_lib.data.text import encode, train_wordpiece

log = logging.getLogger(__name__)

URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
OFFICIAL = ("imdb/aclImdb_v1.tar.gz", "7c2ac02c03563afcf9b574c7e56c153a")
REPACK = ("imdb/aclImdb_labeled_text.tar.gz", "cfcce3b77dad00404026824d3a036cc8")
VARIANTS = {OFFICIAL[0]: "official aclImdb_v1", REPACK[0]: "labeled-text repack"}
SIZES = (25_000, 25_000)
CLASSES = ("negative", "positive")
REVIEW = re.compile(r"aclImdb/(train|test)/(pos|neg)/(\d+)_\d+\.txt")
ORDER_SEED = 25_000  # the fixed shuffle of each split (see the module docstring)


class TokenizerCacheError(ValueError):
    """A cached tokenizer was built with other settings than the ones asked for."""


def _fetch(files: Files) -> tuple[str, str]:
    """(path, md5) of a verified archive in the data root (see the module docstring)."""
    for rel, md5 in (OFFICIAL, REPACK):
        if found := files.find(rel, md5):
            files.add(rel, md5, found)
            return rel, md5
    rel, md5 = OFFICIAL
    what = "IMDB: neither archive is available:" + "".join(
        f"\n    {r}  {m}" for r, m in (OFFICIAL, REPACK)
    )
    folder = files.root / Path(rel).parent
    from torchvision.datasets.utils import download_url  # slow to import: only when needed

    fetch = lambda: download_url(URL, str(folder), Path(rel).name, md5)  # noqa: E731
    files.download(fetch, {rel: md5}, what, f"download:{URL}")
    if not (files.root / rel).is_file():
        raise DataUnavailableError(files.unavailable(what, "did not produce the archive"))
    files.check(rel, md5)
    files.add(rel, md5, ("download", f"download:{URL}"))
    return rel, md5


def read_reviews(archive: Path) -> dict[str, tuple[list[str], list[int]]]:
    """{"train": (texts, labels), "test": (texts, labels)} of a `aclImdb` archive, each split
    in the fixed order of the module docstring; labels 0 negative, 1 positive."""
    found: dict[str, list[tuple[int, int, str]]] = {"train": [], "test": []}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            match = REVIEW.fullmatch(member.name)
            if match and member.isfile():
                split, label, review_id = match.groups()
                text = tar.extractfile(member).read().decode("utf-8")  # type: ignore[union-attr]
                found[split].append((int(label == "pos"), int(review_id), text))
    reviews = {}
    for (split, items), expected in zip(found.items(), SIZES, strict=True):
        if len(items) != expected:
            raise ValueError(f"{archive} holds {len(items)} {split} reviews, not {expected}")
        items.sort(key=lambda item: item[:2])
        order = torch.randperm(len(items), generator=torch.Generator().manual_seed(ORDER_SEED))
        reviews[split] = ([items[i][2] for i in order], [items[i][0] for i in order])
    return reviews


def _settings(md5: str, n_train: int, vocab_size: int) -> dict[str, object]:
    return {
        "archive_md5": md5,
        "train_reviews": n_train,
        "vocab_size": vocab_size,
        "model": "wordpiece",
        "lowercase": True,
    }


def _write(path: Path, write) -> None:
    """Write a cache file atomically: `write(<path>.part)`, then rename it."""
    part = path.with_name(f".{path.name}.part")
    write(part)
    os.replace(part, path)


def _tokenized(files: Files, md5: str, n: tuple[int, int], vocab_size: int, max_len: int):
    """(tokenizer, encoded splits {"x_train", "y_train", "len_train", ... "len_test"}) from
    the cache, else built (reading the archive) and cached."""
    settings = _settings(md5, n[0], vocab_size)
    folder = files.root / "imdb" / "tokenized" / f"{md5}-train{n[0]}-vocab{vocab_size}"
    encoded_path = folder / f"max_len{max_len}-test{n[1]}.pt"
    reviews = None
    if (folder / "tokenizer.json").is_file():
        cached = json.loads((folder / "settings.json").read_text())
        if cached != settings:
            differ = ", ".join(
                f"{k}: cached {cached.get(k)!r}, asked {v!r}"
                for k, v in settings.items()
                if cached.get(k) != v
            )
            raise TokenizerCacheError(
                f"the cached tokenizer in {folder} was built with other settings ({differ}); "
                f"delete that folder (rm -r '{folder}') and load again to rebuild it"
            )
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    else:
        reviews = read_reviews(files.root / _archive_of(md5))
        log.info("training a WordPiece tokenizer (vocabulary %d) on %d reviews", vocab_size, n[0])
        tokenizer = train_wordpiece(reviews["train"][0][: n[0]], vocab_size)
        with files.writing():
            folder.mkdir(parents=True, exist_ok=True)
            _write(folder / "tokenizer.json", lambda p: tokenizer.save(str(p)))
            _write(folder / "settings.json", lambda p: p.write_text(json.dumps(settings)))
    if encoded_path.is_file():
        try:
            return tokenizer, torch.load(encoded_path, weights_only=True)
        except (RuntimeError, OSError, EOFError) as exc:  # a damaged cache is rebuilt
            log.warning("rebuilding the damaged cache %s (%s)", encoded_path, exc)
    reviews = reviews or read_reviews(files.root / _archive_of(md5))
    splits = {}
    for split, size in zip(("train", "test"), n, strict=True):
        texts, labels = reviews[split]
        encoded = encode(tokenizer, texts[:size], max_len)
        splits |= {
            f"x_{split}": encoded.ids,
            f"len_{split}": encoded.lengths,
            f"y_{split}": torch.tensor(labels[:size], dtype=torch.int64),
        }
    with files.writing():
        _write(encoded_path, lambda p: torch.save(splits, p))
    return tokenizer, splits


def _archive_of(md5: str) -> str:
    return next(rel for rel, m in (OFFICIAL, REPACK) if m == md5)


def truncated_share(lengths: torch.Tensor, max_len: int) -> str:
    """E.g. `31.2% of 25000 reviews cut to 256 tokens`."""
    share = float((lengths > max_len).double().mean()) * 100
    return f"{share:.1f}% of {len(lengths)} cut to {max_len} tokens"


def load_imdb(
    train_subset: int | None = None,
    test_subset: int | None = None,
    vocab_size: int = 8000,
    max_len: int = 256,
    device: str | torch.device = "cpu",
) -> InMemoryDataset:
    """IMDB on `device`: x int64 (N, max_len) token ids ([CLS] first, [PAD] = 0 after the
    review), y int64 (N,) (0 negative, 1 positive). The tokenizer (`tokenizer` of the result)
    is trained on the training reviews loaded (the first `train_subset`); reviews longer than
    `max_len` tokens are cut, and `info.describe()` says how many. An empty review is [CLS]
    alone."""
    checks.integer("vocab_size", vocab_size, 100)
    checks.integer("max_len", max_len, 2)
    n = subset_sizes(train_subset, test_subset, SIZES)
    files = Files()
    rel, md5 = _fetch(files)
    tokenizer, splits = _tokenized(files, md5, n, vocab_size, max_len)
    settings = {
        "tokenizer": f"WordPiece, lower-cased, {tokenizer.get_vocab_size()} tokens, trained on "
        f"{n[0]} train reviews",
        "truncated": f"train {truncated_share(splits['len_train'], max_len)}, test "
        f"{truncated_share(splits['len_test'], max_len)}",
    }
    info = files.info("IMDB", n, SIZES, variant=VARIANTS[rel], settings=settings)
    names = ("x_train", "y_train", "x_test", "y_test")
    tensors = {name: splits[name].to(device) for name in names}
    return InMemoryDataset(**tensors, info=info, classes=CLASSES, tokenizer=tokenizer)


def fetch_archive() -> str:
    """Make an IMDB archive present and verified in the data root (tokenizing is left to the
    loads, whose settings differ); one line saying which archive and where from."""
    files = Files()
    rel, md5 = _fetch(files)
    info = files.info("IMDB", (0, 0), SIZES, variant=VARIANTS[rel])
    return f"IMDB {VARIANTS[rel]}: {files.root / rel} from {info.origin}, md5 {md5} verified"


def load_texts(
    train_subset: int | None = None, test_subset: int | None = None
) -> dict[str, tuple[list[str], list[int]]]:
    """The raw reviews and labels of the subsets `load_imdb` loads, untruncated: {"train":
    (texts, labels), "test": (texts, labels)} (for baselines that read text)."""
    n = subset_sizes(train_subset, test_subset, SIZES)
    files = Files()
    rel, _ = _fetch(files)
    reviews = read_reviews(files.root / rel)
    return {
        split: (texts[:size], labels[:size])
        for (split, (texts, labels)), size in zip(reviews.items(), n, strict=True)
    }
