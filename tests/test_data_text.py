"""IMDB and the WordPiece tokenizer: small subsets of the real reviews from the mirror, the
tokenizer cache, and clear failures. The network is conftest.py's fake."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from helpers import MIRROR

from mlw_lib.data import ChecksumError, DataUnavailableError, imdb, load_dataset
from mlw_lib.data.imdb import REPACK, URL, TokenizerCacheError, load_imdb
from mlw_lib.data.text import CLS, PAD_ID, encode, tokens_of, train_wordpiece

if TYPE_CHECKING:
    from conftest import FakeNetwork

needs_imdb = pytest.mark.skipif(
    not (MIRROR / REPACK[0]).is_file(), reason=f"IMDB not in the mirror {MIRROR}"
)
SMALL = dict(train_subset=300, test_subset=100, vocab_size=600, max_len=64)


# --- the tokenizer (generated text) ---------------------------------------------------------
def test_tokenizer_normalises_and_pads(refusals) -> None:
    texts = ["A GREAT film.<br /><br />Great acting", "a dull film", "great great film", ""]
    tokenizer = train_wordpiece(texts * 5, vocab_size=100)
    encoded = encode(tokenizer, texts, max_len=5)
    assert tokens_of(tokenizer, encoded.ids[0]) == [CLS, "a", "great", "film", "."]
    assert encoded.lengths.tolist() == [7, 4, 4, 1]  # [CLS] + tokens, before the cut
    assert encoded.ids[3].tolist() == [tokenizer.token_to_id(CLS)] + [PAD_ID] * 4  # empty
    assert encoded.ids[1, 4] == PAD_ID and encoded.ids.dtype == torch.int64
    assert "<" not in tokenizer.get_vocab() and "GREAT" not in tokenizer.get_vocab()
    refusals.behaviour("an empty review", "it becomes [CLS] alone, then padding (a test)")
    refusals.behaviour(
        "a review longer than max_len tokens",
        "cut to max_len; describe() says which share of the reviews was cut (a test)",
    )


# --- real reviews ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root that loaded a small IMDB subset from the mirror once (one archive read)."""
    if not (MIRROR / REPACK[0]).is_file():
        pytest.skip(f"IMDB not in the mirror {MIRROR}")
    root = tmp_path_factory.mktemp("imdb") / "data"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLW_DATA_ROOT", str(root))
        mp.setenv("MLW_DATA_MIRROR", str(MIRROR))
        load_imdb(**SMALL)
    return root


@pytest.fixture
def cached(loaded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of `loaded` as the data root (tests may change it), the mirror configured."""
    root = tmp_path / "data"
    shutil.copytree(loaded, root)
    monkeypatch.setenv("MLW_DATA_ROOT", str(root))
    monkeypatch.setenv("MLW_DATA_MIRROR", str(MIRROR))
    return root


@needs_imdb
def test_a_subset_of_real_reviews_from_the_cache(cached: Path, monkeypatch) -> None:
    def no_archive(path):
        raise AssertionError("a cached load must not read the archive")

    monkeypatch.setattr(imdb, "read_reviews", no_archive)
    data = load_dataset("imdb", **SMALL)
    assert data.x_train.shape == (300, 64) and data.x_test.shape == (100, 64)
    assert 0.35 < float(data.y_train.float().mean()) < 0.65, "a subset mixes both labels"
    cls = data.tokenizer.token_to_id(CLS)
    assert bool((data.x_train[:, 0] == cls).all())
    padded = data.x_train == PAD_ID
    assert torch.equal(padded, padded.cummax(dim=1).values), "padding only after the review"
    assert data.tokenizer.get_vocab_size() <= 600 and data.classes == ("negative", "positive")
    text = data.info.describe()
    assert text.startswith("IMDB labeled-text repack (subset: first 300/25000 train / 100/25000")
    assert "from cache (originally mirror" in text and "WordPiece, lower-cased" in text
    assert "% of 300 cut to 64 tokens" in text
    assert data.info.as_tags()["data_tokenizer"].endswith("trained on 300 train reviews")


@needs_imdb
def test_reviews_are_the_official_files_in_a_fixed_shuffled_order(cached: Path) -> None:
    reviews = imdb.read_reviews(cached / REPACK[0])
    texts, labels = reviews["test"]
    assert len(texts) == 25_000 and sum(labels) == 12_500
    again = load_imdb(**SMALL)
    tokenizer = again.tokenizer
    first = encode(tokenizer, texts[:100], 64).ids
    assert torch.equal(first, again.x_test) and again.y_test.tolist() == labels[:100]


@needs_imdb
def test_a_cached_tokenizer_of_other_settings_is_refused(cached: Path, refusals) -> None:
    (folder,) = (cached / "imdb" / "tokenized").iterdir()
    settings = json.loads((folder / "settings.json").read_text())
    (folder / "settings.json").write_text(json.dumps(settings | {"vocab_size": 900}))
    what = "load IMDB with a cached tokenizer built with other settings"
    with refusals.error(what, TokenizerCacheError, "vocab_size: cached 900, asked 600") as caught:
        load_imdb(**SMALL)
    assert f"rm -r '{folder}'" in str(caught.value)


@needs_imdb
def test_a_damaged_encoded_cache_is_rebuilt(cached: Path, refusals) -> None:
    (encoded,) = (cached / "imdb" / "tokenized").glob("*/max_len64-test100.pt")
    before = torch.load(encoded, weights_only=True)
    encoded.write_bytes(encoded.read_bytes()[:100])
    data = load_imdb(**SMALL)
    assert torch.equal(data.x_train, before["x_train"])
    assert torch.equal(torch.load(encoded, weights_only=True)["x_test"], before["x_test"])
    refusals.behaviour(
        "load IMDB with a truncated cache of encoded reviews",
        "a warning names the file; it is rebuilt from the archive",
    )


@needs_imdb
def test_a_corrupt_archive_in_the_data_root_is_refused(cached: Path, refusals) -> None:
    archive = cached / REPACK[0]
    data = bytearray(archive.read_bytes())
    data[1000:1004] = bytes(b ^ 0xFF for b in data[1000:1004])
    archive.write_bytes(bytes(data))
    what = "load IMDB with a bit-flipped archive in the data root"
    with refusals.error(what, ChecksumError, f"expected md5 {REPACK[1]}"):
        load_imdb(**SMALL)


def test_imdb_missing_everywhere_names_both_archives_and_the_fix(
    root: Path, empty_mirror: Path, network: FakeNetwork, refusals
) -> None:
    what = "load IMDB offline, with neither archive anywhere"
    with refusals.error(what, DataUnavailableError, "IMDB: neither archive") as caught:
        load_imdb(**SMALL)
    assert URL in network.opened
    for rel, md5 in (imdb.OFFICIAL, REPACK):
        assert f"{rel}  {md5}" in str(caught.value)
    assert "export MLW_DATA_MIRROR=" in str(caught.value)


def test_a_corrupt_imdb_download_is_refused_and_deleted(
    root: Path, empty_mirror: Path, network: FakeNetwork, refusals
) -> None:
    network.served[URL] = b"<html>not the archive</html>"
    what = "download IMDB and receive an HTML page instead of the archive"
    with refusals.error(what, ChecksumError, "The download is corrupt; it was deleted"):
        load_imdb(**SMALL)
    assert not (root / imdb.OFFICIAL[0]).exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(vocab_size=5), "vocab_size must be an integer >= 100"), (dict(max_len=1), "max_len")],
)
def test_bad_tokenizer_settings_are_refused(kwargs, message, empty_mirror, refusals) -> None:
    what = f"load_imdb({', '.join(f'{k}={v}' for k, v in kwargs.items())})"
    with refusals.error(what, ValueError, message):
        load_imdb(**kwargs)


@needs_imdb
def test_the_tfidf_reference_reads_the_same_reviews_and_learns(cached: Path) -> None:
    from mlw_lib.baselines import tfidf_logistic_regression

    texts = imdb.load_texts(train_subset=1000, test_subset=300)
    assert [len(t) for t, _ in texts.values()] == [1000, 300]
    tokens = load_imdb(**SMALL)
    assert texts["test"][1][:100] == tokens.y_test.tolist()
    accuracy = tfidf_logistic_regression(*texts["train"], *texts["test"])
    assert accuracy > 0.7
