"""Generated PDE regression data: steady Darcy flow and a Poisson problem on the unit square,
solved by cell-centred finite volumes for random conductivities kappa.

Grid: n x n square cells of side h = 1/n. Arrays are indexed `field[iy, ix]`; cell (iy, ix)
has its centre at x = (ix + 0.5)/n, y = (iy + 0.5)/n, and unknown number k = iy*n + ix
(row-major). Face conductivities are harmonic means of the two cells; a Dirichlet face uses the
boundary cell's kappa over the half-cell distance (transmissibility 2 kappa).

- Darcy: -div(kappa grad p) = 0, p = 1 at x = 0, p = 0 at x = 1, no flux at y = 0 and y = 1.
  Target: the outflow Q through x = 1 (the sum of the boundary face fluxes; Q = 1 for kappa = 1).
- Poisson: -div(kappa grad u) = 1, u = 0 on the whole boundary. Target: the flux -kappa du/dx
  at the cell centres, (n, n) flattened row-major: central differences inside; in the first and
  last column the quadratic through the boundary value u = 0 at the face and the two nearest
  cell centres (second order, like the central differences).

kappa comes from a Gaussian random field with covariance (-Laplacian + tau^2)^(-alpha) (Neumann
cosine modes; alpha = 2, tau = 3, scaled as in Li et al.'s FNO Darcy benchmark): Darcy
"two_phase" kappa = 12 where the field >= 0 else 3, or "lognormal" kappa = exp(field); Poisson
always lognormal. Sample i is drawn from `np.random.default_rng([seed, i])`, so the data do not
depend on the number of worker processes.

Cache: `<data root>/pde/<problem>_<field>_n<n>_N<samples>_seed<seed>.npz` (raw float32 arrays
`kappa` (N, n, n), `targets` (N, 1) or (N, n*n), `solution` (N, n, n): pressure p or u) and next
to it a `.json` manifest of every generation parameter and the npz's sha256, written last. An
npz without its manifest is regenerated; a manifest of other parameters or a wrong sha256 is
refused with the fix.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.fft
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import splu
from tqdm.auto import tqdm

from mlw_lib.checks import choice, flag
from mlw_lib.data.dataset import DatasetInfo, InMemoryDataset, subset_sizes
from mlw_lib.data.files import ChecksumError, Files

GENERATOR_VERSION = 1  # bump when a change alters the generated numbers
PROBLEMS = ("darcy", "poisson")
FIELDS = ("two_phase", "lognormal")
ALPHA, TAU = 2.0, 3.0  # GRF covariance (-Laplacian + TAU^2)^(-ALPHA)
TWO_PHASE = (12.0, 3.0)  # kappa where the field >= 0, and where it is < 0
DEFAULT_SAMPLES = {"darcy": 50_000, "poisson": 20_000}
TRAIN_TENTHS = {"darcy": 8, "poisson": 9}  # the first 80% / 90% of the samples are training
NAMES = {"darcy": "Darcy", "poisson": "Poisson"}
TARGETS = {"darcy": "outflow Q through x = 1", "poisson": "flux -kappa du/dx at cell centres"}
MAX_WORKERS = 8
CHUNK = 500  # most samples per worker task


class PDECacheError(ValueError):
    """A cached PDE data set was generated with other parameters than the ones asked for."""


class CacheChecksumError(ChecksumError):
    """The sha256 of a cached file is not the one its manifest records; names the fix."""

    def __init__(self, path: Path, expected: str, actual: str, fix: str) -> None:
        self.path, self.expected, self.actual = path, expected, actual
        RuntimeError.__init__(
            self, f"Checksum mismatch for {path}: expected sha256 {expected}, got {actual}. {fix}"
        )


# --- the finite-volume solver ----------------------------------------------------------------


def _grid(n: object) -> int:
    """`n` checked as a grid size (cells per side, an int >= 2)."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 2:
        raise ValueError(f"grid size n must be an integer >= 2 (cells per side), got {n!r}")
    return int(n)


def check_kappa(kappa: object) -> np.ndarray:
    """`kappa` as a float64 (n, n) array, n >= 2, of finite positive conductivities."""
    k = np.asarray(kappa, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(
            f"kappa must be a square 2-D array (n, n) of cell values, got shape {k.shape}; "
            "pass one field[iy, ix] per sample"
        )
    _grid(k.shape[0])
    bad = ~(np.isfinite(k) & (k > 0))
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"kappa must be finite and > 0 everywhere (else the system is singular): "
            f"{int(bad.sum())} cells are not, the first at [iy, ix] = {list(first)} "
            f"({k[first]}); clip or exponentiate the field first"
        )
    return k


def face_conductivities(kappa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Harmonic means of neighbouring cells: x-faces (n, n-1) between ix and ix+1, y-faces
    (n-1, n) between iy and iy+1."""
    kx = 2 * kappa[:, :-1] * kappa[:, 1:] / (kappa[:, :-1] + kappa[:, 1:])
    ky = 2 * kappa[:-1] * kappa[1:] / (kappa[:-1] + kappa[1:])
    return kx, ky


def operator(kappa: np.ndarray, dirichlet_y: bool) -> sp.csc_array:
    """The (n*n, n*n) finite-volume matrix of -div(kappa grad .) for a valid `kappa` (n, n):
    Dirichlet faces at x = 0 and x = 1, and at y = 0 and y = 1 if `dirichlet_y` (else no
    flux); their boundary values belong on the right-hand side (2 kappa * value)."""
    n = len(kappa)
    kx, ky = face_conductivities(kappa)
    diag = np.zeros_like(kappa)
    diag[:, :-1] += kx
    diag[:, 1:] += kx
    diag[:-1] += ky
    diag[1:] += ky
    boundary = [(slice(None), 0), (slice(None), -1)]
    boundary += [(0, slice(None)), (-1, slice(None))] if dirichlet_y else []
    for cells in boundary:
        diag[cells] += 2 * kappa[cells]
    east = np.pad(-kx, ((0, 0), (0, 1))).ravel()[:-1]  # A[k, k+1]; 0 across a row end
    north = -ky.ravel()  # A[k, k+n]
    diagonals = [north, east, diag.ravel(), east, north]
    return sp.diags_array(diagonals, offsets=[-n, -1, 0, 1, n], format="csc")


def _solve(matrix: sp.csc_array, rhs: np.ndarray) -> np.ndarray:
    """`matrix`^-1 `rhs` for the symmetric positive definite finite-volume matrix (sparse LU,
    symmetric ordering, no pivoting)."""
    options = {"SymmetricMode": True}
    lu = splu(matrix, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options=options)
    return lu.solve(rhs)


def solve_darcy(kappa: np.ndarray) -> tuple[np.ndarray, float]:
    """Pressure p (n, n) and outflow Q through x = 1 of -div(kappa grad p) = 0 with p = 1 at
    x = 0, p = 0 at x = 1 and no flux at y = 0, 1, for `kappa` (n, n) > 0."""
    k = check_kappa(kappa)
    rhs = np.zeros_like(k)
    rhs[:, 0] = 2 * k[:, 0]  # the face at x = 0 holds p = 1
    p = _solve(operator(k, dirichlet_y=False), rhs.ravel()).reshape(k.shape)
    return p, float(np.sum(2 * k[:, -1] * p[:, -1]))  # faces at x = 1 hold p = 0


def solve_poisson(kappa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solution u (n, n) of -div(kappa grad u) = 1 with u = 0 on the boundary, and the flux
    -kappa du/dx (n, n) at the cell centres (see the module docstring), for `kappa` (n, n) > 0."""
    k = check_kappa(kappa)
    n = len(k)
    rhs = np.full(n * n, 1.0 / n**2)  # the source 1 integrated over a cell
    u = _solve(operator(k, dirichlet_y=True), rhs).reshape(k.shape)
    dudx = np.empty_like(u)
    dudx[:, 1:-1] = (u[:, 2:] - u[:, :-2]) * (n / 2)
    dudx[:, 0] = (u[:, 0] + u[:, 1] / 3) * n  # u = 0 at x = 0, h/2 left of the centre
    dudx[:, -1] = -(u[:, -1] + u[:, -2] / 3) * n  # u = 0 at x = 1
    return u, -k * dudx


# --- random conductivities ------------------------------------------------------------------


def cell_centres(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y), each (n, n): X[iy, ix] = (ix + 0.5)/n, Y[iy, ix] = (iy + 0.5)/n."""
    centres = (np.arange(_grid(n)) + 0.5) / n
    x, y = np.meshgrid(centres, centres)
    return x, y


def grf_modes(n: int, alpha: float = ALPHA, tau: float = TAU) -> np.ndarray:
    """(n, n) standard deviations of the cosine modes (k_y, k_x) of the Gaussian random field:
    tau^(alpha-1) (pi^2 |k|^2 + tau^2)^(-alpha/2), the constant mode 0 (a zero-mean field)."""
    k = np.arange(_grid(n))
    squares = k[:, None] ** 2 + k[None, :] ** 2
    modes = tau ** (alpha - 1) * (np.pi**2 * squares + tau**2) ** (-alpha / 2)
    modes[0, 0] = 0.0
    return modes


def gaussian_field(
    rng: np.random.Generator, n: int, alpha: float = ALPHA, tau: float = TAU
) -> np.ndarray:
    """A draw (n, n) at the cell centres of the field sum_k modes[k] xi_k phi_k, xi_k ~ N(0, 1),
    phi_k the L2-orthonormal cosines of the unit square (an inverse DCT-II)."""
    coefficients = grf_modes(n, alpha, tau) * rng.standard_normal((n, n))
    return n * scipy.fft.idctn(coefficients, type=2, norm="ortho")


def conductivity(rng: np.random.Generator, n: int, field: str = "two_phase") -> np.ndarray:
    """kappa (n, n) from one Gaussian random field draw: "two_phase" 12 where it is >= 0 else
    3, "lognormal" its exponential."""
    choice("field", field, FIELDS)
    values = gaussian_field(rng, n)
    if field == "lognormal":
        return np.exp(values)
    return np.where(values >= 0, *TWO_PHASE)


# --- generation -----------------------------------------------------------------------------


def sample(problem: str, field: str, n: int, seed: int, index: int) -> tuple[np.ndarray, ...]:
    """Sample `index`: (kappa (n, n), target (1,) Q or (n*n,) flux, solution (n, n))."""
    kappa = conductivity(np.random.default_rng([seed, index]), n, field)
    if problem == "darcy":
        p, q = solve_darcy(kappa)
        return kappa, np.array([q]), p
    u, flux = solve_poisson(kappa)
    return kappa, flux.ravel(), u


def _chunk(problem: str, field: str, n: int, seed: int, start: int, stop: int) -> tuple:
    """(start, kappa, targets, solution) float32 of samples start .. stop-1 (a worker task)."""
    parts = zip(*(sample(problem, field, n, seed, i) for i in range(start, stop)), strict=True)
    return (start, *(np.stack(part).astype(np.float32) for part in parts))


def _context() -> multiprocessing.context.BaseContext:
    """fork on Linux: the workers run numpy and scipy only (never torch, threads or CUDA that
    the parent may hold), and a script that calls the loader needs no `__main__` guard.
    Elsewhere spawn (macOS and Windows: a script must guard its code with
    `if __name__ == "__main__":`, as spawn runs it again in every worker)."""
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def default_workers() -> int:
    """The machine's CPU count, at most `MAX_WORKERS`."""
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


def generate(
    problem: str = "darcy",
    n: int = 32,
    samples: int | None = None,
    seed: int = 0,
    field: str | None = None,
    workers: int | None = None,
) -> dict[str, np.ndarray]:
    """Raw float32 arrays {"kappa": (N, n, n), "targets": (N, 1) or (N, n*n), "solution":
    (N, n, n)} of N = `samples` samples (arguments as `load_pde`), solved in `workers`
    processes (None: the CPU count, at most 8; 1: in this process), never cached."""
    problem, field, n, samples, seed = _settings(problem, field, n, samples, seed, workers)
    workers = default_workers() if workers is None else workers
    size = max(1, min(CHUNK, math.ceil(samples / (4 * workers))))
    starts = range(0, samples, size)
    shapes = {"kappa": (n, n), "targets": (1,) if problem == "darcy" else (n * n,)}
    arrays = {
        k: np.empty((samples, *s), np.float32) for k, s in (shapes | {"solution": (n, n)}).items()
    }
    bar = tqdm(total=samples, desc=f"solving {NAMES[problem]} ({n}x{n})", unit="sample")

    def store(start: int, *parts: np.ndarray) -> None:
        for array, part in zip(arrays.values(), parts, strict=True):
            array[start : start + len(part)] = part
        bar.update(len(parts[0]))

    with bar:
        tasks = [(problem, field, n, seed, s, min(s + size, samples)) for s in starts]
        if workers == 1 or len(tasks) == 1:
            for task in tasks:
                store(*_chunk(*task))
        else:
            with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=_context()) as pool:
                futures = [pool.submit(_chunk, *task) for task in tasks]
                try:
                    for done in as_completed(futures):
                        store(*done.result())
                except BaseException as exc:  # an error or an interrupt: stop, do not wait
                    pool.shutdown(wait=False, cancel_futures=True)
                    if isinstance(exc, BrokenProcessPool):
                        raise RuntimeError(_BROKEN_POOL) from exc
                    raise
    _check_finite(arrays)
    return arrays


_BROKEN_POOL = (
    "a worker process generating PDE data died: it may have run out of memory (pass fewer "
    "workers; workers=1: none), or, outside Linux, a script that loads data without "
    '`if __name__ == "__main__":` ran again in the worker'
)


def _check_finite(arrays: dict[str, np.ndarray]) -> None:
    """Raise ValueError naming how many samples hold NaN or inf, and the first."""
    bad = np.zeros(len(arrays["kappa"]), dtype=bool)
    for array in arrays.values():
        bad |= ~np.isfinite(array.reshape(len(array), -1)).all(axis=1)
    if bad.any():
        raise ValueError(
            f"the generated data hold NaN or inf in {int(bad.sum())} of {len(bad)} samples "
            f"(the first: sample {int(np.argmax(bad))}); nothing was cached. Check the "
            "conductivity field and solver (kappa must be finite and > 0)"
        )


# --- the cache ------------------------------------------------------------------------------


def parameters(problem: str, field: str, n: int, samples: int, seed: int) -> dict[str, object]:
    """Every parameter the generated numbers depend on (as the manifest stores them)."""
    return {
        "problem": problem,
        "field": field,
        "n": n,
        "samples": samples,
        "seed": seed,
        "alpha": ALPHA,
        "tau": TAU,
        "two_phase": list(TWO_PHASE),
        "generator_version": GENERATOR_VERSION,
    }


def cache_files(root: Path, params: dict[str, object]) -> tuple[Path, Path]:
    """(npz, manifest) paths of the data set of `params` in the data root `root`."""
    p = params
    stem = f"{p['problem']}_{p['field']}_n{p['n']}_N{p['samples']}_seed{p['seed']}"
    return root / "pde" / f"{stem}.npz", root / "pde" / f"{stem}.json"


def sha256(path: Path) -> str:
    """Hex sha256 of the file at `path`."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _refresh_fix(npz: Path, manifest: Path) -> str:
    return (
        f"Fix: delete the two files to regenerate them (rm '{npz}' '{manifest}'), or use another "
        "data root (MLW_DATA_ROOT)."
    )


def read_cache(npz: Path, manifest: Path, params: dict[str, object]) -> dict | None:
    """The cached arrays of `params` with their sha256 ({"arrays": ..., "sha256": ...}), or
    None when there is no complete cache (no manifest, or no npz)."""
    if not manifest.is_file() or not npz.is_file():
        return None
    try:
        record = json.loads(manifest.read_text())
        cached = dict(record["params"])
        expected = str(record["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PDECacheError(
            f"unreadable PDE cache manifest {manifest} ({exc}). {_refresh_fix(npz, manifest)}"
        ) from exc
    wanted = json.loads(json.dumps(params))
    differ = sorted(k for k in cached.keys() | wanted.keys() if cached.get(k) != wanted.get(k))
    if differ:
        what = ", ".join(f"{k}: cached {cached.get(k)!r}, asked {wanted.get(k)!r}" for k in differ)
        raise PDECacheError(
            f"the PDE cache {npz} was generated with other parameters ({what}). "
            + _refresh_fix(npz, manifest)
        )
    if (actual := sha256(npz)) != expected:
        raise CacheChecksumError(npz, expected, actual, _refresh_fix(npz, manifest))
    with np.load(npz) as data:
        return {"arrays": {k: data[k] for k in data.files}, "sha256": expected}


def write_cache(npz: Path, manifest: Path, params: dict, arrays: dict[str, np.ndarray]) -> str:
    """Write `arrays` to `npz`, then the manifest of `params` and its sha256 (each to a
    temporary name first, the manifest last); return the sha256."""
    npz.parent.mkdir(parents=True, exist_ok=True)
    manifest.unlink(missing_ok=True)  # a stale manifest must never describe the new npz
    parts = [p.with_name(f".{p.name}.{os.getpid()}.part") for p in (npz, manifest)]
    try:
        with parts[0].open("wb") as f:  # zip entries dated 1980: equal data, equal sha256
            np.savez(f, **arrays)
        digest = sha256(parts[0])
        os.replace(parts[0], npz)
        record = {"generator": __name__, "params": params, "sha256": digest}
        parts[1].write_text(json.dumps(record, indent=1) + "\n")
        os.replace(parts[1], manifest)
    finally:
        for part in parts:
            part.unlink(missing_ok=True)
    return digest


@dataclass(frozen=True)
class PDEArrays:
    """Raw (un-normalised) float32 arrays of a generated data set (see `generate`), how this
    load got them (`source`: "cache" or "generated"), the npz relative to the data root and its
    sha256."""

    kappa: np.ndarray
    targets: np.ndarray
    solution: np.ndarray
    source: str
    file: str
    sha256: str


def pde_arrays(
    problem: str = "darcy",
    n: int = 32,
    samples: int | None = None,
    seed: int = 0,
    field: str | None = None,
    workers: int | None = None,
) -> PDEArrays:
    """The raw arrays of a data set, from the cache in `<data root>/pde/` if it holds them,
    else generated (see `generate`) and cached. Arguments as `load_pde`."""
    problem, field, n, samples, seed = _settings(problem, field, n, samples, seed, workers)
    files = Files()
    params = parameters(problem, field, n, samples, seed)
    npz, manifest = cache_files(files.root, params)
    rel = npz.relative_to(files.root).as_posix()
    if cached := read_cache(npz, manifest, params):
        return PDEArrays(**cached["arrays"], source="cache", file=rel, sha256=cached["sha256"])
    with files.writing():  # an unwritable data root fails before the work, not after it
        npz.parent.mkdir(parents=True, exist_ok=True)
    arrays = generate(problem, n, samples, seed, field, workers)
    with files.writing():
        digest = write_cache(npz, manifest, params, arrays)
    return PDEArrays(**arrays, source="generated", file=rel, sha256=digest)


# --- the loader -----------------------------------------------------------------------------


def _integer(name: str, value: object, minimum: int, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum} ({hint}), got {value!r}")
    return int(value)


def split_sizes(problem: str, samples: int) -> tuple[int, int]:
    """(train, test) sizes: the first 80% (Darcy) or 90% (Poisson) of the samples train."""
    train = samples * TRAIN_TENTHS[problem] // 10
    return train, samples - train


def _settings(
    problem: object, field: object, n: object, samples: object, seed: object, workers: object
) -> tuple[str, str, int, int, int]:
    """The checked (problem, field, n, samples, seed), with the defaults filled in."""
    choice("problem", problem, PROBLEMS)
    if field is None:
        field = "two_phase" if problem == "darcy" else "lognormal"
    choice("field", field, FIELDS)
    if problem == "poisson" and field != "lognormal":
        raise ValueError(
            f"field={field!r} applies to darcy only: Poisson's kappa is always lognormal; "
            "pass field=None (or 'lognormal')"
        )
    n = _grid(n)
    samples = DEFAULT_SAMPLES[problem] if samples is None else samples
    samples = _integer("samples", samples, 1, f"None for {DEFAULT_SAMPLES[problem]}")
    train, test = split_sizes(problem, samples)
    if not (train and test):
        percent = 10 * TRAIN_TENTHS[problem]
        raise ValueError(
            f"samples={samples} gives {train} train / {test} test examples with the {problem} "
            f"{percent}/{100 - percent} split; use samples >= 2"
        )
    seed = _integer("seed", seed, 0, "any non-negative integer")
    if workers is not None:
        _integer("workers", workers, 1, f"None for the CPU count, at most {MAX_WORKERS}")
    return problem, field, n, samples, seed


def _inputs(arrays: PDEArrays, problem: str, count: slice) -> np.ndarray:
    """Network inputs (N, C, n, n) of the samples `count`: kappa, and for Poisson the cell
    centres X, Y as two more channels."""
    kappa = arrays.kappa[count, None]
    if problem == "darcy":
        return kappa
    coords = np.stack(cell_centres(kappa.shape[-1]))[None].astype(np.float32)
    return np.concatenate([kappa, np.broadcast_to(coords, (len(kappa), *coords.shape[1:]))], 1)


def _scale(values: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) over `axes` (kept), float64; a std of 0 becomes 1."""
    mean = values.mean(axis=axes, keepdims=True, dtype=np.float64)
    std = values.std(axis=axes, keepdims=True, dtype=np.float64)
    return mean, np.where(std > 0, std, 1.0)


def _validation_size(validation: object, n_train: int) -> int:
    """The checked validation size: None gives a tenth of the `n_train` training examples."""
    if validation is None:
        return n_train // 10
    _integer("validation", validation, 0, "None for a tenth of the train split, 0 for none")
    if validation >= n_train:
        raise ValueError(
            f"validation={validation} leaves no training data: the train split has {n_train} "
            "examples; pass a smaller validation size, or 0 for none"
        )
    return int(validation)


def _variant(problem: str, field: str, n: int) -> str:
    kind = "two-phase" if field == "two_phase" else "lognormal"
    return f"{kind} kappa, {n}x{n} grid"


def load_pde(
    problem: str = "darcy",
    n: int = 32,
    samples: int | None = None,
    seed: int = 0,
    field: str | None = None,
    validation: int | None = None,
    flatten: bool = False,
    device: str | torch.device = "cpu",
    workers: int | None = None,
    train_subset: int | None = None,
    test_subset: int | None = None,
) -> InMemoryDataset:
    """A generated PDE regression data set on `device`, normalised by training statistics.

    x float32 (N, C, n, n), or (N, C*n*n) if `flatten`: Darcy C = 1 (kappa), Poisson C = 3
    (kappa, X, Y); y float32: Darcy (N, 1) outflow Q, Poisson (N, n*n) flux. `samples` (None:
    50,000 Darcy, 20,000 Poisson) split 80/20 or 90/10 into train/test in sample order; a
    subset is the first examples of each split. `field`: Darcy's kappa, "two_phase" (None) or
    "lognormal"; Poisson's is lognormal. `validation` (None: a tenth of the train split; 0:
    none): the last training examples become x_val/y_val. x is normalised per channel and y
    by one scalar (mean, std) of the training examples left; `x_scale`/`y_scale` hold them.
    `workers`: processes generating a missing cache (None: CPU count, at most 8).
    """
    problem, field, n, samples, seed = _settings(problem, field, n, samples, seed, workers)
    flag("flatten", flatten)
    full = split_sizes(problem, samples)
    n_train, n_test = subset_sizes(train_subset, test_subset, full)
    val = _validation_size(validation, n_train)
    arrays = pde_arrays(problem, n, samples, seed, field, workers)
    splits = {"train": slice(0, n_train), "test": slice(full[0], full[0] + n_test)}
    x = {k: _inputs(arrays, problem, s) for k, s in splits.items()}
    y = {k: arrays.targets[s] for k, s in splits.items()}
    keep = n_train - val
    x_mean, x_std = _scale(x["train"][:keep], (0, 2, 3))
    y_mean, y_std = _scale(y["train"][:keep], (0, 1))
    if flatten:
        x_mean, x_std = (np.repeat(v[:, :, 0, 0], n * n, axis=1) for v in (x_mean, x_std))
        x = {k: v.reshape(len(v), -1) for k, v in x.items()}

    def tensor(values: np.ndarray) -> torch.Tensor:  # a copy: the arrays stay raw
        return torch.tensor(np.asarray(values), dtype=torch.float32, device=device)

    def normalised(values: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
        return tensor(values).sub_(tensor(mean)).div_(tensor(std))

    info = _info(problem, field, n, seed, arrays, (n_train, n_test), full)
    data = InMemoryDataset(
        normalised(x["train"], x_mean, x_std),
        normalised(y["train"], y_mean, y_std),
        normalised(x["test"], x_mean, x_std),
        normalised(y["test"], y_mean, y_std),
        info,
        x_scale=(tensor(x_mean), tensor(x_std)),
        y_scale=(tensor(y_mean), tensor(y_std)),
    )
    return data.hold_out(val) if val else data


def _info(
    problem: str,
    field: str,
    n: int,
    seed: int,
    arrays: PDEArrays,
    loaded: tuple[int, int],
    full: tuple[int, int],
) -> DatasetInfo:
    """The record of a load of `loaded` (train, test) examples of the `full` splits."""
    settings = {
        "grid": f"{n}x{n}",
        "samples": str(sum(full)),
        "kappa": _kappa_text(field),
        "target": TARGETS[problem],
        "normalised": "by training statistics",
    }
    return DatasetInfo(
        NAMES[problem],
        arrays.source,
        f"generated:{__name__} (seed {seed})",
        {arrays.file: arrays.sha256},
        *loaded,
        *full,
        variant=_variant(problem, field, n),
        settings=settings,
        checksum="sha256",
    )


def _kappa_text(field: str) -> str:
    grf = f"GRF (-Laplacian + {TAU:g}^2)^-{ALPHA:g}"
    if field == "lognormal":
        return f"exp({grf})"
    return f"{TWO_PHASE[0]:g} where {grf} >= 0 else {TWO_PHASE[1]:g}"


def load_darcy(**kwargs: object) -> InMemoryDataset:
    """`load_pde("darcy", **kwargs)`: x kappa (N, 1, n, n), y outflow Q (N, 1)."""
    return load_pde("darcy", **kwargs)


def load_poisson(**kwargs: object) -> InMemoryDataset:
    """`load_pde("poisson", **kwargs)`: x (kappa, X, Y) (N, 3, n, n), y flux (N, n*n)."""
    return load_pde("poisson", **kwargs)
