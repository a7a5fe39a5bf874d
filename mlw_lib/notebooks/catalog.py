"""Finding notebooks and their parameter files, all resolved from the repository root."""

from __future__ import annotations

from pathlib import Path

from mlw_lib.paths import repo_root

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"


class UnknownNotebookError(ValueError):
    """No notebook matches the requested name."""


def notebooks_dir() -> Path:
    """`<repo>/notebooks/`."""
    return repo_root() / "notebooks"


def params_root() -> Path:
    """`<repo>/params/`, holding one folder per parameter set (`ci/`, `paper/`)."""
    return repo_root() / "params"


def list_notebooks(directory: Path | None = None) -> list[Path]:
    """Numbered notebooks `NN_name.ipynb` in `directory` (default `notebooks/`), in order."""
    directory = notebooks_dir() if directory is None else Path(directory)
    return sorted(directory.glob(NOTEBOOK_GLOB))


def notebook_key(path: Path) -> str:
    """The key that links notebook, runs and figures: the file stem, e.g. `01_mlp_mnist`."""
    return Path(path).stem


def resolve_notebook(name: str | Path, directory: Path | None = None) -> Path:
    """Find a notebook by number (`01`), key (`01_mlp_mnist`), file name or path."""
    candidate = Path(name)
    if candidate.suffix == ".ipynb" and candidate.is_file():
        return candidate.resolve()
    available = list_notebooks(directory)
    text = str(name)
    for path in available:
        if text in (path.name, path.stem) or path.stem.split("_", 1)[0] == text:
            return path.resolve()
    names = ", ".join(p.stem for p in available) or "none"
    raise UnknownNotebookError(f"unknown notebook {text!r}; available notebooks: {names}")


def parameter_set_file(parameter_set: str, key: str, root: Path | None = None) -> Path:
    """`params/<parameter_set>/<key>.yaml` (may not exist)."""
    return (params_root() if root is None else Path(root)) / parameter_set / f"{key}.yaml"


def parameter_set_files(parameter_set: str, key: str, root: Path | None = None) -> dict[str, Path]:
    """The runs of notebook `key` in a parameter set: variant -> file.

    `<key>.yaml` is the variant `""`; each `<key>.<variant>.yaml` is one more run of the same
    notebook (e.g. `02_cnn_cifar10.fashion_mnist.yaml`). Other files in the folder (such as
    `02_cnn_cifar10_full_gpu.yaml`) are only run by hand with `run -f`.
    """
    folder = (params_root() if root is None else Path(root)) / parameter_set
    files = {}
    main = folder / f"{key}.yaml"
    if main.is_file():
        files[""] = main
    for path in sorted(folder.glob(f"{key}.*.yaml")):
        variant = path.name[len(key) + 1 : -len(".yaml")]
        if variant and "." not in variant:
            files[variant] = path
    return files
