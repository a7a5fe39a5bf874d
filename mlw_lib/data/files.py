"""A dataset's files made present and md5-verified in the data root (`paths.data_root()`).

Every file is checked against its declared md5 (torchvision's `check_integrity`), wherever it
came from: the data root ("cache"), a copy from `$MLW_DATA_MIRROR` ("mirror"; the mirror is
only read) or a torchvision download ("download"). `<data root>/provenance.json` records each
file's origin, so a later cache hit still reports it.

The mirror is never written: a data root that is, lies inside or holds the mirror (compared by
inode, so through links too) is refused with `DataRootError` before anything is written. A write
into the data root that fails (folder, copy, extraction, download) raises `DataRootError` too; a
read-only data root that already holds every verified file still loads, without the record.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mlw_lib.data.dataset import SOURCES, DatasetInfo
from mlw_lib.paths import data_root, repo_root

MIRROR_ENV = "MLW_DATA_MIRROR"


def check_integrity(path: Path, md5: str) -> bool:
    """torchvision's check: `path` exists and has this md5 (torchvision imported on first use:
    it takes a second, and toy or PDE data never need it)."""
    from torchvision.datasets.utils import check_integrity as check

    return check(str(path), md5)


def calculate_md5(path: Path) -> str:
    """The md5 of the file `path` (torchvision's)."""
    from torchvision.datasets.utils import calculate_md5 as md5

    return md5(str(path))
Found = tuple[str, str]  # (source, origin) of one verified file


class DataUnavailableError(RuntimeError):
    """The files are in neither the data root nor the mirror, and could not be downloaded."""


class ChecksumError(RuntimeError):
    """The md5 of `path` is not `expected` (`actual` is); the message names the fix."""

    def __init__(self, path: Path, expected: str, fix: str) -> None:
        self.path, self.expected, self.actual = path, expected, calculate_md5(path)
        super().__init__(
            f"Checksum mismatch for {path}: expected md5 {expected}, got {self.actual}. {fix}"
        )


class DataRootError(ValueError):
    """`$MLW_DATA_ROOT` overlaps the mirror or cannot be written (`problem`); names the fix."""

    def __init__(self, problem: str) -> None:
        default = repo_root() / "data"
        super().__init__(
            f"{problem}\nFix: point MLW_DATA_ROOT at a writable folder outside {MIRROR_ENV}"
            f" (unset, it is {default})."
        )


def _within(path: Path, folder: Path) -> bool:
    """Whether `path` is `folder` or lies inside it (by inode: through any link or mount)."""
    return folder.is_dir() and any(p.exists() and p.samefile(folder) for p in (path, *path.parents))


def mirror_dir() -> Path | None:
    """`$MLW_DATA_MIRROR` as an absolute path, or None when unset or empty."""
    value = os.environ.get(MIRROR_ENV, "").strip()
    return Path(value).expanduser().resolve() if value else None


class Files:
    """The verified files of one load: `md5s` {path relative to the data root: md5}, their
    `origins`, and `source`, the costliest step taken."""

    def __init__(self) -> None:
        self.root, self.mirror, self.source = data_root(), mirror_dir(), "cache"
        self.md5s: dict[str, str] = {}
        self.origins: dict[str, str] = {}
        self.verified: dict[str, dict[str, str]] = {}  # every file verified, for the record
        if self.mirror and (_within(self.root, self.mirror) or _within(self.mirror, self.root)):
            raise DataRootError(
                f"$MLW_DATA_ROOT={self.root} and ${MIRROR_ENV}={self.mirror} overlap, but the"
                " mirror is only read and loading writes into the data root."
            )
        try:
            self.record = dict(json.loads((self.root / "provenance.json").read_text()))
        except (OSError, ValueError, TypeError):
            self.record = {}

    def check(self, rel: str, md5: str) -> None:
        """Raise `ChecksumError` unless `<root>/rel` has `md5`."""
        if not check_integrity(path := self.root / rel, md5):
            raise ChecksumError(path, md5, f"Delete the file (rm '{path}') and re-run.")

    def find(self, rel: str, md5: str) -> Found | None:
        """`<root>/rel`, verified, or else copied from the mirror and verified; None if neither
        has it. A corrupt file raises `ChecksumError` (never a silent fall-back)."""
        dest, src = self.root / rel, self.mirror / rel if self.mirror else None
        if dest.is_file():
            self.check(rel, md5)
            entry = self.record.get(rel)
            known = isinstance(entry, dict) and entry.get("md5") == md5
            return self._note(rel, md5, "cache", entry["origin"] if known else f"local:{self.root}")
        if src is None or not src.is_file():
            return None
        with self.writing():
            dest.parent.mkdir(parents=True, exist_ok=True)
            part = dest.with_name(f".{dest.name}.part")
            try:
                shutil.copyfile(src, part)
                if not check_integrity(part, md5):
                    fix = f"Replace the mirror's copy, or unset {MIRROR_ENV} to download."
                    raise ChecksumError(src, md5, f"{fix} Not copied.")
                os.replace(part, dest)
            finally:
                part.unlink(missing_ok=True)
        return self._note(rel, md5, "mirror", f"mirror:{self.mirror}")

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Raise an OSError on a path in the data root as a `DataRootError`, naming the fix."""
        try:
            yield
        except OSError as exc:
            paths = [Path(f) for f in (exc.filename, exc.filename2) if isinstance(f, str)]
            if not any(path.is_relative_to(self.root) for path in paths):
                raise
            raise DataRootError(f"Cannot write into $MLW_DATA_ROOT={self.root}: {exc}") from exc

    def _note(self, rel: str, md5: str, source: str, origin: str) -> Found:
        self.verified[rel] = {"md5": md5, "origin": origin}
        return source, origin

    def find_all(self, files: dict[str, str]) -> bool:
        """`find` each of `files` {path: md5}; if all are there, `add` them and return True."""
        found = {rel: self.find(rel, md5) for rel, md5 in files.items()}
        if not all(found.values()):
            return False
        for rel, how in found.items():
            self.add(rel, files[rel], how)  # type: ignore[arg-type]
        return True

    def add(self, rel: str, md5: str, found: Found) -> None:
        """Count the verified `<root>/rel` as read by this load."""
        self.md5s[rel], self.origins[rel] = md5, self._note(rel, md5, *found)[1]
        self.source = max(self.source, found[0], key=SOURCES.index)

    def download(
        self, call: Callable[[], object], archives: dict[str, str], what: str, origin: str
    ) -> None:
        """Run a torchvision `download=True` constructor: it fetches what the data root lacks of
        `archives` {path: md5} from `origin`, checks and extracts it. A corrupt archive is
        deleted and refused; another failure raises `DataUnavailableError` (`what`: the files)."""
        try:
            with self.writing():
                call()
        except (OSError, RuntimeError) as exc:
            failure: Exception | None = exc
        else:
            failure = None
        for path, md5 in ((self.root / rel, md5) for rel, md5 in archives.items()):
            if path.is_file() and not check_integrity(path, md5):
                error = ChecksumError(path, md5, "The download is corrupt; it was deleted.")
                path.unlink()
                raise error
        if failure is not None:
            reason = f"failed: {str(failure).strip()}"
            raise DataUnavailableError(self.unavailable(what, reason)) from failure
        for rel, md5 in archives.items():
            if rel not in self.verified and (self.root / rel).is_file():
                self._note(rel, md5, "download", origin)

    def unavailable(self, what: str, download: str) -> str:
        """The error text for missing files: `what` (they), where they were looked for, the fix."""
        mirror = f"${MIRROR_ENV}={self.mirror} " if self.mirror else f"${MIRROR_ENV} is not set"
        if self.mirror:
            mirror += "does not hold them" if self.mirror.is_dir() else "is not a directory"
        shared = repo_root().parent / "shared" / "datasets"
        example = shared.resolve() if shared.is_dir() else "/path/to/shared/datasets"
        return (
            f"{what}\n  data root: {self.root}  ($MLW_DATA_ROOT, default <repo>/data)\n"
            f"  mirror: {mirror}\n  download: {download}\nFix: point {MIRROR_ENV} at a folder"
            f" that holds these files (same relative paths), e.g.\n    export {MIRROR_ENV}="
            f"{example}\nor copy them into {self.root}, or re-run with network access."
        )

    def info(self, name: str, n: tuple[int, int], full: tuple[int, int], **kw) -> DatasetInfo:
        """`DatasetInfo` of `n` (train, test) examples of a file set of `full` examples read
        from these files (`kw`: `variant`, `partial`); records their origins on the way."""
        if any(self.record.get(rel) != entry for rel, entry in self.verified.items()):
            path = self.root / "provenance.json"
            try:
                text = json.dumps(self.record | self.verified, indent=1, sort_keys=True)
                path.with_suffix(".part").write_text(text)
                os.replace(path.with_suffix(".part"), path)
            except OSError:  # a read-only data root still loads, only without the record
                pass
        origin = " + ".join(dict.fromkeys(self.origins.values()))
        return DatasetInfo(name, self.source, origin, dict(self.md5s), *n, *full, **kw)
