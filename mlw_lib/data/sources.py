"""Dataset-agnostic fetching: make a dataset's files present and md5-verified in the data root.

A dataset is declared once as a `DatasetSpec` (its files, their md5s and official URLs).
`ensure_files(spec)` resolves every file, in this order:

1. cache    - already in the data root with the right md5;
2. mirror   - copied from `$MLW_DATA_MIRROR/<same relative path>` (the mirror is only read);
3. download - fetched from the file's official URLs.

Each file's md5 is checked every time, whatever its source; a mismatch raises
`ChecksumError` and a corrupt file is never used. Where each file originally came from is
recorded in `provenance.json` next to the files, so a later cache hit still reports it.
`ensure_first(specs)` does the same for a dataset with alternative file sets; when a preferred
set's download fails it is not retried for `RETRY_DOWNLOAD_AFTER` (recorded in
`download-failures.json` in the data root), so offline loads fall back at once.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tempfile
import urllib.request
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.client import HTTPException
from pathlib import Path

from mlw_lib.paths import data_root, repo_root

MIRROR_ENV = "MLW_DATA_MIRROR"
PROVENANCE_FILE = "provenance.json"
DOWNLOAD_FAILURES_FILE = "download-failures.json"
RETRY_DOWNLOAD_AFTER = timedelta(hours=24)
_CHUNK = 1 << 20


class DataUnavailableError(RuntimeError):
    """The files are in neither the data root nor the mirror, and could not be downloaded."""


class ChecksumError(RuntimeError):
    """A file's md5 differs from the declared one (in the cache, the mirror or a download)."""

    def __init__(self, message: str, path: Path, expected: str, actual: str) -> None:
        super().__init__(message)
        self.path = path
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True)
class DataFile:
    """One file of a dataset.

    `path` is relative to the data root (and to the mirror), e.g.
    "MNIST/raw/train-images-idx3-ubyte.gz"; `urls` are tried in order. With `gunzip=True`
    the URLs serve a gzip of the file, which is decompressed before the md5 check (for
    datasets kept uncompressed, such as Fashion-MNIST in the shared mirror).
    """

    path: str
    md5: str
    urls: tuple[str, ...] = ()
    gunzip: bool = False


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset's files; one declaration per dataset."""

    name: str
    files: tuple[DataFile, ...]

    def __post_init__(self) -> None:
        if not self.files:
            raise ValueError(f"{self.name}: a DatasetSpec needs at least one file")

    @property
    def provenance_dir(self) -> str:
        """Relative folder that holds `provenance.json`: the files' common parent."""
        return os.path.commonpath([str(Path(f.path).parent) for f in self.files])


@dataclass(frozen=True)
class FetchResult:
    """What `ensure_files` did. `source` is the costliest step taken in this call."""

    spec: DatasetSpec
    root: Path
    source: str
    origin: str
    paths: dict[str, Path] = field(default_factory=dict)
    md5s: dict[str, str] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)


def md5sum(path: Path) -> str:
    """md5 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def download_file(url: str, dest: Path, timeout: float = 60.0) -> None:
    """Stream `url` into `dest` (overwritten). Raises OSError on network failure."""
    request = urllib.request.Request(url, headers={"User-Agent": "mlw (python urllib)"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as f:
        shutil.copyfileobj(response, f, _CHUNK)


def mirror_dir() -> Path | None:
    """`$MLW_DATA_MIRROR` as an absolute path, or None when unset or empty."""
    value = os.environ.get(MIRROR_ENV, "").strip()
    return Path(value).expanduser().resolve() if value else None


def ensure_files(
    spec: DatasetSpec,
    root: Path | None = None,
    mirror: Path | None = None,
    allow_download: bool = True,
) -> FetchResult:
    """Make every file of `spec` present and md5-verified under `root` (default: `data_root()`).

    `mirror` defaults to `$MLW_DATA_MIRROR`. Raises `ChecksumError` on any md5 mismatch and
    `DataUnavailableError` when some files can be obtained from nowhere.
    """
    root = Path(root).resolve() if root is not None else data_root()
    mirror = Path(mirror).resolve() if mirror is not None else mirror_dir()
    root_is_mirror = mirror is not None and root == mirror
    record = _read_provenance(root, spec)
    origins: dict[str, str] = {}
    source = "cache"
    missing: list[DataFile] = []

    for f in spec.files:
        dest = root / f.path
        if not dest.is_file():
            missing.append(f)
            continue
        _verify(dest, f.md5, _cache_fix(dest))
        entry = record.get(f.path)
        if isinstance(entry, dict) and entry.get("md5") == f.md5 and entry.get("origin"):
            origins[f.path] = entry["origin"]
        else:
            origins[f.path] = f"mirror:{mirror}" if root_is_mirror else f"local:{root}"

    if missing and mirror is not None and mirror.is_dir() and not root_is_mirror:
        for f in list(missing):
            src = mirror / f.path
            if src.is_file():
                _copy_verified(src, root / f.path, f.md5)
                origins[f.path] = f"mirror:{mirror}"
                missing.remove(f)
                source = "mirror"

    failures: list[str] = []
    if missing and allow_download:
        for f in list(missing):
            url = _download_verified(f, root / f.path, failures)
            if url is None:
                break  # network is likely down: don't wait on every remaining file
            origins[f.path] = f"download:{url}"
            missing.remove(f)
            source = "download"

    if missing:
        raise DataUnavailableError(
            _unavailable_message(spec, missing, root, mirror, allow_download, failures)
        )

    if not root_is_mirror:
        _write_provenance(root, spec, record, origins)
    return FetchResult(
        spec=spec,
        root=root,
        source=source,
        origin=_dataset_origin([origins[f.path] for f in spec.files]),
        paths={f.path: root / f.path for f in spec.files},
        md5s={f.path: f.md5 for f in spec.files},
        origins=origins,
    )


def ensure_first(
    specs: Sequence[DatasetSpec],
    root: Path | None = None,
    mirror: Path | None = None,
    allow_download: bool = True,
) -> FetchResult:
    """`ensure_files` on each alternative file set in order; the first complete one wins.

    Each alternative goes through cache, mirror and its own download URLs before the next is
    tried; `FetchResult.spec` says which one was used. An unavailable alternative falls
    through, a checksum mismatch raises. A preferred alternative whose download failed within
    `RETRY_DOWNLOAD_AFTER` is only looked for in the cache and the mirror (with a warning);
    delete `<data root>/download-failures.json` to retry at once. The last alternative is
    always downloaded when missing. When none is available, the `DataUnavailableError`
    lists what each lacked (a single spec's error is raised unchanged).
    """
    if not specs:
        raise ValueError("ensure_first needs at least one DatasetSpec")
    failures_root = Path(root).resolve() if root is not None else data_root()
    errors: list[DataUnavailableError] = []
    for i, spec in enumerate(specs):
        preferred = i < len(specs) - 1  # a later alternative can stand in for it
        failed_at = _recent_download_failure(failures_root, spec) if preferred else None
        download = allow_download and failed_at is None
        try:
            return ensure_files(spec, root, mirror, download)
        except DataUnavailableError as exc:
            errors.append(exc)
            if failed_at is not None and allow_download:
                warnings.warn(
                    f"{spec.name}: not downloaded again (its download failed at {failed_at};"
                    f" it is retried {RETRY_DOWNLOAD_AFTER.total_seconds() / 3600:g} hours"
                    " after a failure), so the next alternative is used."
                    f" To retry now, delete {_failures_path(failures_root)}.",
                    stacklevel=2,
                )
            elif preferred and download and any(f.urls for f in spec.files):
                _record_download_failure(failures_root, spec)
    if len(errors) == 1:
        raise errors[0]
    names = ", ".join(spec.name for spec in specs)
    parts = [f"None of the {len(specs)} alternative file sets is available ({names}):"]
    parts += [f"({i}) {exc}" for i, exc in enumerate(errors, 1)]
    raise DataUnavailableError("\n".join(parts))


# --- verification and copying -------------------------------------------------------------


def _verify(path: Path, expected: str, fix: str) -> None:
    actual = md5sum(path)
    if actual != expected:
        raise ChecksumError(
            f"Checksum mismatch for {path}: expected md5 {expected}, got {actual}. {fix}",
            path,
            expected,
            actual,
        )


def _cache_fix(dest: Path) -> str:
    return f"The cached file is corrupt or stale: delete it (rm '{dest}') and re-run."


@contextmanager
def _staged(dest: Path) -> Iterator[Path]:
    """A temporary file next to `dest`, moved into place only if the block succeeds."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _copy_verified(src: Path, dest: Path, expected: str) -> None:
    """Copy `src` (only read) to `dest` atomically, hashing while copying."""
    with _staged(dest) as tmp:
        h = hashlib.md5(usedforsecurity=False)
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            for chunk in iter(lambda: fin.read(_CHUNK), b""):
                h.update(chunk)
                fout.write(chunk)
        actual = h.hexdigest()
        if actual != expected:
            raise ChecksumError(
                f"Checksum mismatch for mirror file {src}: expected md5 {expected}, got {actual}."
                f" The mirror copy is corrupt: replace it with a good copy, or unset"
                f" {MIRROR_ENV} to download the official file instead. Nothing was copied.",
                src,
                expected,
                actual,
            )


def _download_verified(f: DataFile, dest: Path, failures: list[str]) -> str | None:
    """Try each URL of `f`; return the one that worked, or None (reasons go to `failures`)."""
    mismatch: ChecksumError | None = None
    for url in f.urls:
        try:
            with _staged(dest) as tmp:
                download_file(url, tmp)
                if f.gunzip:
                    _gunzip_in_place(tmp)
                actual = md5sum(tmp)
                if actual != f.md5:
                    raise ChecksumError(
                        f"Checksum mismatch for {f.path} downloaded from {url}: expected md5"
                        f" {f.md5}, got {actual}. The download is corrupt or the file changed"
                        f" upstream; nothing was kept. Re-run, or provide a verified copy via"
                        f" {MIRROR_ENV}.",
                        dest,
                        f.md5,
                        actual,
                    )
            return url
        except ChecksumError as exc:
            mismatch = exc
            failures.append(f"{url}: md5 {exc.actual} != {f.md5}")
        except (OSError, HTTPException, EOFError) as exc:
            failures.append(f"{url}: {type(exc).__name__}: {exc}")
    if mismatch is not None:
        raise mismatch
    if not f.urls:
        failures.append(f"{f.path}: no download URL declared")
    return None


def _gunzip_in_place(path: Path) -> None:
    out = path.with_name(path.name + ".gunzip")
    try:
        with gzip.open(path, "rb") as fin, open(out, "wb") as fout:
            shutil.copyfileobj(fin, fout, _CHUNK)
        os.replace(out, path)
    finally:
        out.unlink(missing_ok=True)


# --- failed downloads of preferred alternatives ------------------------------------------


def _failures_path(root: Path) -> Path:
    return root / DOWNLOAD_FAILURES_FILE


def _read_failures(root: Path) -> dict[str, str]:
    """`{spec name: UTC time of its last failed download}`; empty if absent or unreadable."""
    try:
        data = json.loads(_failures_path(root).read_text())
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _recent_download_failure(root: Path, spec: DatasetSpec) -> str | None:
    """When `spec`'s download last failed, if within `RETRY_DOWNLOAD_AFTER`; else None."""
    try:
        failed = datetime.fromisoformat(_read_failures(root)[spec.name])
    except (KeyError, ValueError):
        return None
    return failed.isoformat() if datetime.now(UTC) - failed < RETRY_DOWNLOAD_AFTER else None


def _record_download_failure(root: Path, spec: DatasetSpec) -> None:
    failures = _read_failures(root)
    failures[spec.name] = datetime.now(UTC).isoformat(timespec="seconds")
    path = _failures_path(root)
    try:
        with _staged(path) as tmp:
            tmp.write_text(json.dumps(failures, indent=2, sort_keys=True) + "\n")
    except OSError as exc:  # a read-only data root: the download is simply tried next time
        warnings.warn(f"could not write {path}: {exc}", stacklevel=4)


# --- provenance ---------------------------------------------------------------------------


def _provenance_path(root: Path, spec: DatasetSpec) -> Path:
    return root / spec.provenance_dir / PROVENANCE_FILE


def _read_provenance(root: Path, spec: DatasetSpec) -> dict[str, dict[str, str]]:
    """`{relative path: {"md5", "origin", "recorded_utc"}}`; empty if absent or unreadable."""
    try:
        data = json.loads(_provenance_path(root, spec).read_text())
        files = data.get("files", {})
        return files if isinstance(files, dict) else {}
    except (OSError, ValueError, AttributeError):
        return {}


def _write_provenance(
    root: Path, spec: DatasetSpec, record: dict[str, dict[str, str]], origins: dict[str, str]
) -> None:
    """Merge this dataset's entries into `provenance.json`; written only when it changes."""
    files = dict(record)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    changed = False
    for f in spec.files:
        new = {"md5": f.md5, "origin": origins[f.path]}
        old = files.get(f.path)
        if not isinstance(old, dict) or {k: old.get(k) for k in new} != new:
            files[f.path] = {**new, "recorded_utc": now}
            changed = True
    if not changed:
        return
    path = _provenance_path(root, spec)
    text = json.dumps({"format": 1, "files": dict(sorted(files.items()))}, indent=2) + "\n"
    try:
        with _staged(path) as tmp:
            tmp.write_text(text)
    except OSError as exc:  # a read-only data root still loads, just without the record
        warnings.warn(f"could not write {path}: {exc}", stacklevel=3)


def _dataset_origin(origins: list[str]) -> str:
    """One origin string for the dataset: the common one, else the distinct ones joined."""
    unique = list(dict.fromkeys(origins))
    if len(unique) > 1:  # several downloads: report the folder(s) they came from
        folders = (o.rsplit("/", 1)[0] + "/" if o.startswith("download:") else o for o in unique)
        unique = list(dict.fromkeys(folders))
    return " + ".join(unique)


# --- error messages -----------------------------------------------------------------------


def _suggested_mirror() -> str:
    shared = (repo_root().parent / "shared" / "datasets").resolve()
    return str(shared) if shared.is_dir() else "/path/to/shared/datasets"


def _unavailable_message(
    spec: DatasetSpec,
    missing: list[DataFile],
    root: Path,
    mirror: Path | None,
    allow_download: bool,
    failures: list[str],
) -> str:
    lines = [
        f"{spec.name}: {len(missing)} of {len(spec.files)} required file(s) are not available.",
        f"  data root: {root}  (from $MLW_DATA_ROOT, default <repo>/data)",
        "  missing files (path relative to the data root, md5):",
        *(f"    {f.path}  {f.md5}" for f in missing),
    ]
    if mirror is None:
        lines.append(f"  mirror: ${MIRROR_ENV} is not set")
    elif not mirror.is_dir():
        lines.append(f"  mirror: ${MIRROR_ENV}={mirror} is not a directory")
    else:
        lines.append(f"  mirror: ${MIRROR_ENV}={mirror} does not hold them")
    if not allow_download:
        lines.append("  download: disabled")
    else:
        lines.append("  download: failed")
        lines.extend(f"    {reason}" for reason in failures)
    lines += [
        f"Fix: point {MIRROR_ENV} at a directory that holds these files under the same relative"
        " paths, e.g.",
        f"    export {MIRROR_ENV}={_suggested_mirror()}",
        f"or copy the files into {root}, or re-run with network access.",
    ]
    return "\n".join(lines)
