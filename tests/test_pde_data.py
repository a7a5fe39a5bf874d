"""mlw_lib.data.pde: the finite-volume solvers against exact solutions, the random
conductivities, and the generated data sets (splits, normalisation, cache and its failures).

Tiny grids and sample counts; the data root is a temporary folder (the `root` fixture).
"""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mlw_lib.data import LOADERS, ChecksumError, load_dataset, load_pde, pde

SMALL = dict(n=8, samples=20, workers=1)  # Darcy: 16 train (1 of them validation) / 4 test


def _series(x: np.ndarray, y: np.ndarray, terms: int = 401) -> tuple[np.ndarray, np.ndarray]:
    """The exact solution of -Laplace u = 1, u = 0 on the boundary, and du/dx, at the points
    (y[i], x[j]) as [i, j] arrays: sum over odd m, n of 16 sin(m pi x) sin(n pi y) /
    (pi^4 m n (m^2 + n^2))."""
    m = np.arange(1, terms + 1, 2)
    coef = 16 / (np.pi**4 * np.outer(m, m) * (m[:, None] ** 2 + m[None, :] ** 2))  # [n, m]
    sin_y, sin_x = np.sin(np.pi * np.outer(y, m)), np.sin(np.pi * np.outer(x, m))
    du = sin_y @ (coef * np.pi * m[None, :]) @ np.cos(np.pi * np.outer(x, m)).T
    return sin_y @ coef @ sin_x.T, du


def _centres(n: int) -> np.ndarray:
    return (np.arange(n) + 0.5) / n


def _two_phase(n: int, seed: int = 0) -> np.ndarray:
    return pde.conductivity(np.random.default_rng(seed), n, "two_phase")


# --- the solvers ----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 8, 33])
def test_homogeneous_kappa_gives_unit_outflow_and_linear_pressure(n: int) -> None:
    p, q = pde.solve_darcy(np.ones((n, n)))
    assert abs(q - 1) < 1e-12
    np.testing.assert_allclose(p, np.broadcast_to(1 - _centres(n), (n, n)), rtol=0, atol=1e-13)


def test_scaling_kappa_scales_the_outflow_and_leaves_the_pressure() -> None:
    kappa = _two_phase(16)
    p, q = pde.solve_darcy(kappa)
    p2, q2 = pde.solve_darcy(2.5 * kappa)
    assert 0 < q and abs(q2 / q - 2.5) < 1e-12
    np.testing.assert_allclose(p2, p, rtol=0, atol=1e-12)


def test_layered_kappa_outflow_is_its_mean_and_series_layers_its_harmonic_mean() -> None:
    values = np.random.default_rng(3).uniform(0.1, 10.0, 12)
    _, q = pde.solve_darcy(np.repeat(values[:, None], 12, axis=1))  # kappa(y): parallel
    assert abs(q - values.mean()) < 1e-12 * values.mean()
    _, q = pde.solve_darcy(np.repeat(values[None, :], 12, axis=0))  # kappa(x): in series
    assert abs(q - 1 / np.mean(1 / values)) < 1e-12


def test_outflow_equals_inflow() -> None:
    kappa = _two_phase(16, seed=5)
    p, q = pde.solve_darcy(kappa)
    inflow = np.sum(2 * kappa[:, 0] * (1 - p[:, 0]))  # faces at x = 0 hold p = 1
    assert abs(inflow - q) < 1e-10 * q


def test_poisson_with_unit_kappa_is_symmetric() -> None:
    u, flux = pde.solve_poisson(np.ones((10, 10)))
    assert (u > 0).all()
    for image in (u[::-1], u[:, ::-1], u.T):
        np.testing.assert_allclose(image, u, rtol=0, atol=1e-15)
    np.testing.assert_allclose(flux[:, ::-1], -flux, rtol=0, atol=1e-14)  # odd in x


def test_poisson_centre_converges_to_the_series_at_second_order() -> None:
    errors = []
    for n in (16, 32, 64):
        u, _ = pde.solve_poisson(np.ones((n, n)))
        exact, _ = _series(_centres(n)[n // 2 - 1 : n // 2 + 1], _centres(n)[n // 2 - 1 :][:2])
        errors.append(
            abs(u[n // 2 - 1 : n // 2 + 1, n // 2 - 1 : n // 2 + 1].mean() - exact.mean())
        )
    assert errors[0] < 0.1 / 16**2  # O(h^2) with a small constant (u(1/2, 1/2) = 0.0737)
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    assert all(3 < r < 5 for r in ratios), ratios


def test_poisson_flux_converges_inside_at_second_order_and_at_the_boundary() -> None:
    inside, boundary = [], []
    for n in (16, 32, 64):
        _, flux = pde.solve_poisson(np.ones((n, n)))
        _, du = _series(_centres(n), _centres(n), 801)
        error = np.abs(flux + du)  # kappa = 1: flux = -du/dx
        inside.append(error[:, n // 4 : 3 * n // 4].max())
        boundary.append(error[n // 4 : 3 * n // 4, [0, -1]].max())
    assert all(3 < a / b < 5 for a, b in zip(inside, inside[1:], strict=False)), inside
    assert all(1.7 < a / b < 2.3 for a, b in zip(boundary, boundary[1:], strict=False)), boundary
    assert boundary[-1] < 0.01  # the flux there is about 0.2


def test_bad_grids_and_conductivities_are_refused(refusals) -> None:
    cases = {
        "a 1x1 kappa": (np.ones((1, 1)), "grid size n must be an integer >= 2"),
        "a (3, 4) kappa": (np.ones((3, 4)), r"square 2-D array \(n, n\).*shape \(3, 4\)"),
        "a 3-D kappa": (np.ones((2, 4, 4)), r"square 2-D array.*one field\[iy, ix\] per sample"),
    }
    for value, where in ((0.0, [1, 2]), (-1.0, [0, 0]), (np.nan, [3, 1]), (np.inf, [2, 2])):
        kappa = np.ones((4, 4))
        kappa[tuple(where)] = value
        match = rf"finite and > 0 everywhere.*singular.*1 cells.*{where}.*clip or exponentiate"
        cases[f"kappa with a {value} cell"] = (kappa, match.replace("[", r"\[").replace("]", r"\]"))
    for what, (kappa, match) in cases.items():
        for solve in (pde.solve_darcy, pde.solve_poisson):
            with refusals.error(f"{solve.__name__} with {what}", ValueError, match):
                solve(kappa)
    for n in (1, 2.5, True, "8"):
        with refusals.error(f"load_pde(n={n!r})", ValueError, "grid size n must be an integer"):
            load_pde(n=n)  # before any data root is touched


# --- random conductivities ------------------------------------------------------------------


def test_two_phase_takes_only_3_and_12_and_lognormal_is_positive() -> None:
    two_phase = np.stack([_two_phase(16, seed) for seed in range(20)])
    assert set(np.unique(two_phase)) == {3.0, 12.0}
    assert 0.2 < (two_phase == 12).mean() < 0.8  # both phases are common
    lognormal = pde.conductivity(np.random.default_rng(0), 16, "lognormal")
    assert (lognormal > 0).all() and len(np.unique(lognormal)) == 16 * 16


def test_field_variance_is_the_sum_of_the_mode_variances() -> None:
    """E[mean over cells of field^2] = sum_k modes_k^2 for L2-orthonormal modes (the scaling
    of Li et al.'s GRF), the mean over cells of the field is 0 (no constant mode)."""
    rng = np.random.default_rng(0)
    fields = np.stack([pde.gaussian_field(rng, 16) for _ in range(400)])
    expected = (pde.grf_modes(16) ** 2).sum()
    assert abs((fields**2).mean() / expected - 1) < 0.05
    np.testing.assert_allclose(fields.mean(axis=(1, 2)), 0, atol=1e-12)
    smooth = np.abs(np.diff(fields, axis=2)).mean() / np.abs(fields).mean()
    assert smooth < 0.5  # neighbours are strongly correlated


# --- generation -----------------------------------------------------------------------------


def test_samples_are_deterministic_per_seed_and_independent_of_workers() -> None:
    args = dict(problem="darcy", n=8, samples=12)
    one = pde.generate(**args, seed=0, workers=1)
    two = pde.generate(**args, seed=0, workers=2)
    other = pde.generate(**args, seed=1, workers=1)
    assert one.keys() == {"kappa", "targets", "solution"}
    for key in one:
        assert one[key].dtype == np.float32 and np.array_equal(one[key], two[key]), key
        assert not np.array_equal(one[key], other[key]), key
    assert np.array_equal(pde.generate(n=8, samples=5, workers=1)["kappa"], one["kappa"][:5])
    expected = pde.conductivity(np.random.default_rng([0, 3]), 8, "two_phase")
    assert np.array_equal(one["kappa"][3], expected)  # sample i: default_rng([seed, i])
    p, q = pde.solve_darcy(one["kappa"][3])
    assert one["targets"][3, 0] == np.float32(q) and np.array_equal(
        one["solution"][3], p.astype(np.float32)
    )


def test_nan_in_generated_data_is_refused_before_caching(
    root: Path, monkeypatch: pytest.MonkeyPatch, refusals
) -> None:
    solve, calls = pde.solve_darcy, []

    def failing(kappa: np.ndarray) -> tuple[np.ndarray, float]:
        calls.append(1)
        p, q = solve(kappa)
        return (p * np.nan, np.nan) if len(calls) > 3 else (p, q)

    monkeypatch.setattr(pde, "solve_darcy", failing)
    what = "generate Darcy data whose solver returns NaN from the 4th sample on"
    with refusals.error(
        what, ValueError, r"NaN or inf in 17 of 20 samples \(the first: sample 3\)"
    ):
        load_pde(**SMALL)
    assert not any(root.rglob("*.np*")) and not any(root.rglob("*.json"))


# --- loading --------------------------------------------------------------------------------


def test_darcy_splits_shapes_and_info(root: Path) -> None:
    data = load_pde(**SMALL)
    assert data.x_train.shape == (15, 1, 8, 8) and data.x_val.shape == (1, 1, 8, 8)
    assert data.x_test.shape == (4, 1, 8, 8)
    assert (
        data.y_train.shape == (15, 1) and data.y_val.shape == (1, 1) and data.y_test.shape == (4, 1)
    )
    for tensor in (data.x_train, data.y_train, data.x_test, data.y_val, *data.x_scale):
        assert tensor.dtype == torch.float32 and tensor.device.type == "cpu"
    assert data.x_scale[0].shape == (1, 1, 1, 1) and data.y_scale[1].shape == (1, 1)
    info = data.info
    rel = "pde/darcy_two_phase_n8_N20_seed0.npz"
    assert (info.name, info.source, info.checksum) == ("Darcy", "generated", "sha256")
    assert info.origin == "generated:mlw_lib.data.pde (seed 0)"
    assert info.files == {rel: pde.sha256(root / rel)}
    assert (info.n_train, info.n_test, info.full_train, info.full_test) == (15, 4, 16, 4)
    assert info.settings["grid"] == "8x8" and info.settings["samples"] == "20"
    assert info.describe() == (
        "Darcy two-phase kappa, 8x8 grid (subset: first 15/16 train / 4/4 test) from data "
        "generated by mlw_lib.data.pde (seed 0), sha256-verified; grid: 8x8; samples: 20; "
        "kappa: 12 where GRF (-Laplacian + 3^2)^-2 >= 0 else 3; target: outflow Q through "
        "x = 1; normalised: by training statistics; validation: training examples 15-15 of "
        "the loaded order held out (1)"
    )
    manifest = json.loads((root / rel).with_suffix(".json").read_text())
    assert manifest["sha256"] == info.files[rel]
    assert manifest["params"] == {
        "problem": "darcy",
        "field": "two_phase",
        "n": 8,
        "samples": 20,
        "seed": 0,
        "alpha": 2.0,
        "tau": 3.0,
        "two_phase": [12.0, 3.0],
        "generator_version": pde.GENERATOR_VERSION,
    }
    assert not list(root.rglob("*.part"))


def test_poisson_splits_inputs_and_targets(root: Path) -> None:
    data = load_pde("poisson", n=8, samples=20, validation=0, workers=1)
    assert data.x_train.shape == (18, 3, 8, 8) and data.x_test.shape == (2, 3, 8, 8)
    assert data.y_train.shape == (18, 64) and data.x_val is None
    assert data.info.variant == "lognormal kappa, 8x8 grid"
    x, y = data.original(data.x_train, "x"), data.original(data.y_train)
    X, Y = pde.cell_centres(8)
    torch.testing.assert_close(x[:, 1], torch.tensor(X, dtype=torch.float32).expand(18, 8, 8))
    torch.testing.assert_close(x[:, 2], torch.tensor(Y, dtype=torch.float32).expand(18, 8, 8))
    _, flux = pde.solve_poisson(x[5, 0].double().numpy())
    torch.testing.assert_close(y[5], torch.tensor(flux.ravel(), dtype=torch.float32))
    assert (x[:, 0] > 0).all()


def test_flatten_shapes_and_scales(root: Path) -> None:
    image = load_pde("poisson", n=8, samples=20, workers=1)
    flat = load_pde("poisson", n=8, samples=20, workers=1, flatten=True)
    assert flat.x_train.shape == (17, 3 * 64) and flat.x_val.shape == (1, 192)
    assert flat.x_scale[0].shape == (1, 192) and flat.y_scale[0].shape == (1, 1)
    assert torch.equal(flat.x_train, image.x_train.reshape(17, -1))
    assert torch.equal(
        flat.original(flat.x_test, "x"), image.original(image.x_test, "x").flatten(1)
    )


def test_normalised_by_training_statistics_and_original_gives_the_raw_arrays(root: Path) -> None:
    data = load_pde("poisson", n=8, samples=40, workers=1)  # 36 train: 33 + 3 validation
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (33, 3, 4)
    x = data.x_train.transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(x.mean(1), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(1, unbiased=False), torch.ones(3), atol=1e-5, rtol=0)
    assert abs(data.y_train.mean().item()) < 1e-5
    assert abs(data.y_train.std(unbiased=False).item() - 1) < 1e-5
    assert abs(data.y_val.mean().item()) > 1e-4  # validation and test are not in the statistics
    with np.load(root / next(iter(data.info.files))) as raw:
        kappa, targets = raw["kappa"].astype(np.float64), raw["targets"].astype(np.float64)
    mean, std = (t.flatten().tolist() for t in data.x_scale)
    assert mean[0] == pytest.approx(kappa[:33].mean(), rel=1e-6)
    assert std[0] == pytest.approx(kappa[:33].std(), rel=1e-6)
    assert mean[1] == pytest.approx(0.5) and std[1] == pytest.approx(np.sqrt((1 - 1 / 64) / 12))
    assert data.y_scale[0].item() == pytest.approx(targets[:33].mean(), rel=1e-6, abs=1e-9)
    assert data.y_scale[1].item() == pytest.approx(targets[:33].std(), rel=1e-6)
    for split, rows in (("train", slice(0, 33)), ("val", slice(33, 36)), ("test", slice(36, 40))):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        torch.testing.assert_close(data.original(x, "x")[:, 0], torch.tensor(kappa[rows]).float())
        torch.testing.assert_close(data.original(y), torch.tensor(targets[rows]).float())


def test_validation_is_the_end_of_the_train_split_and_subsets_the_first_examples(
    root: Path,
) -> None:
    none = load_pde(n=8, samples=50, validation=0, workers=1)  # 40 train / 10 test
    default = load_pde(n=8, samples=50, workers=1)
    raw = [none.original(none.x_train, "x"), none.original(none.x_test, "x")]
    assert len(default.x_val) == 4 and len(default.x_train) == 36
    torch.testing.assert_close(default.original(default.x_val, "x"), raw[0][36:])
    torch.testing.assert_close(default.original(default.x_train, "x"), raw[0][:36])
    torch.testing.assert_close(default.original(default.x_test, "x"), raw[1])
    sub = load_pde(n=8, samples=50, workers=1, train_subset=20, test_subset=3, validation=5)
    assert (len(sub.x_train), len(sub.x_val), len(sub.x_test)) == (15, 5, 3)
    torch.testing.assert_close(sub.original(sub.x_val, "x"), raw[0][15:20])
    torch.testing.assert_close(sub.original(sub.x_test, "x"), raw[1][:3])
    assert "subset: first 15/40 train / 3/10 test" in sub.info.describe()
    assert load_pde(n=8, samples=50, workers=1, train_subset=9).x_val is None  # 9 // 10 = 0


def test_lognormal_darcy(root: Path) -> None:
    data = load_pde(n=8, samples=10, field="lognormal", workers=1, validation=0)
    kappa = data.original(data.x_train, "x")
    assert (kappa > 0).all() and len(kappa.unique()) > 100
    assert data.info.variant == "lognormal kappa, 8x8 grid"
    assert (root / "pde" / "darcy_lognormal_n8_N10_seed0.npz").is_file()


def test_the_cache_is_reused_without_generating(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load_pde(**SMALL)

    def no_generation(*args: object, **kwargs: object) -> None:
        raise AssertionError("generated again")

    monkeypatch.setattr(pde, "generate", no_generation)
    again = load_pde(**SMALL)
    assert again.info.source == "cache" and first.info.source == "generated"
    assert "from cache (originally data generated by mlw_lib.data.pde (seed 0))" in (
        again.info.describe()
    )
    assert again.info.files == first.info.files
    for name in ("x_train", "y_train", "x_val", "x_test", "y_test"):
        assert torch.equal(getattr(again, name), getattr(first, name)), name
    assert load_dataset("darcy", **SMALL).info.source == "cache"
    assert LOADERS["poisson"] is pde.load_poisson


def test_a_manifest_of_other_parameters_is_refused(root: Path, refusals) -> None:
    load_pde(**SMALL)
    manifest = root / "pde" / "darcy_two_phase_n8_N20_seed0.json"
    record = json.loads(manifest.read_text())
    record["params"] |= {"tau": 2.0, "generator_version": 0}
    manifest.write_text(json.dumps(record))
    what = "load Darcy data whose cache manifest records other generation parameters"
    match = r"darcy_two_phase_n8_N20_seed0.npz was generated with other parameters"
    with refusals.error(what, pde.PDECacheError, match) as caught:
        load_pde(**SMALL)
    message = str(caught.value)
    assert (
        "generator_version: cached 0, asked 1" in message
        and "tau: cached 2.0, asked 3.0" in message
    )
    assert (
        f"rm '{manifest.with_suffix('.npz')}' '{manifest}'" in message
        and "MLW_DATA_ROOT" in message
    )
    assert isinstance(caught.value, ValueError)


def test_a_corrupt_cache_is_refused(root: Path, refusals) -> None:
    load_pde(**SMALL)
    npz = root / "pde" / "darcy_two_phase_n8_N20_seed0.npz"
    data = bytearray(npz.read_bytes())
    data[300:304] = bytes(b ^ 0xFF for b in data[300:304])
    npz.write_bytes(bytes(data))
    what = "load Darcy data whose cached npz was bit-flipped"
    with refusals.error(what, ChecksumError, "expected sha256 [0-9a-f]{64}, got [0-9a-f]{64}") as e:
        load_pde(**SMALL)
    assert f"rm '{npz}'" in str(e.value) and e.value.path == npz


def test_an_npz_without_manifest_is_regenerated(
    root: Path, monkeypatch: pytest.MonkeyPatch, refusals
) -> None:
    first = load_pde(**SMALL)
    npz = root / "pde" / "darcy_two_phase_n8_N20_seed0.npz"
    npz.with_suffix(".json").unlink()
    npz.write_bytes(b"half-written")  # as if a run died between the npz and its manifest
    (npz.parent / f".{npz.name}.123.part").write_bytes(b"left by a killed run")
    later = SimpleNamespace(time=lambda: time.time() + 86_400, localtime=time.localtime)
    monkeypatch.setattr(zipfile, "time", later)  # a day later: the same bytes all the same
    again = load_pde(**SMALL)
    assert again.info.source == "generated" and torch.equal(again.x_train, first.x_train)
    assert again.info.files == first.info.files and npz.with_suffix(".json").is_file()
    refusals.behaviour(
        "load Darcy data whose cache holds an npz but no manifest (a run died while writing)",
        "the data are generated and cached again",
    )


def test_bad_arguments_are_refused(root: Path, refusals) -> None:
    cases = [
        ({"problem": "heat"}, r"unknown problem 'heat'; choose one of \['darcy', 'poisson'\]"),
        ({"field": "gaussian"}, r"unknown field 'gaussian'; choose one of \['two_phase', "),
        ({"problem": "poisson", "field": "two_phase"}, "applies to darcy only.*field=None"),
        ({"samples": 1}, "samples=1 gives 0 train / 1 test .* 80/20 split; use samples >= 2"),
        ({"samples": 0}, r"samples must be an integer >= 1 \(None for 50000\)"),
        ({"samples": 20.0}, "samples must be an integer >= 1"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"workers": 0}, r"workers must be an integer >= 1 \(None for the CPU count"),
        ({"samples": 20, "validation": 16}, "validation=16 leaves no training data.* 16 exa"),
        ({"samples": 20, "validation": -1}, "validation must be an integer >= 0"),
        ({"samples": 20, "train_subset": 17}, "train_subset must satisfy 0 < train_subset <= 16"),
    ]
    for kwargs, match in cases:
        call = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        with refusals.error(f"load_pde({call})", ValueError, match):
            load_pde(**({"n": 8, "workers": 1} | kwargs))
