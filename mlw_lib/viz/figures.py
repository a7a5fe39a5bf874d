"""Save figures once, the same way: byte-stable PDF + PNG under `figures/<notebook>/`."""

from __future__ import annotations

import sys
from pathlib import Path

from matplotlib.figure import Figure

from mlw_lib.paths import figures_dir

# No timestamps or software strings in the files: the same figure gives the same bytes.
PDF_METADATA = {"CreationDate": None, "ModDate": None}
PNG_METADATA = {"Software": None}


def save_figure(
    fig: Figure, notebook_key: str, name: str, log_to_mlflow: bool = True
) -> list[Path]:
    """Write `figures/<notebook_key>/<name>.pdf` and `.png`; return both paths.

    When `log_to_mlflow` and an MLflow run is active, the files are also logged as artifacts
    under `figures/`. Resolution and fonts come from the rcParams (see `use_house_style`).
    """
    if not name or Path(name).name != name or name in {".", ".."}:
        raise ValueError(f"figure name must be a plain file stem, got {name!r}")
    folder = figures_dir(notebook_key)
    pdf_path = folder / f"{name}.pdf"
    png_path = folder / f"{name}.png"
    fig.savefig(pdf_path, format="pdf", metadata=PDF_METADATA)
    fig.savefig(png_path, format="png", metadata=PNG_METADATA)
    paths = [pdf_path, png_path]
    # No run can be active in a process that never imported mlflow; skip its slow import.
    if log_to_mlflow and "mlflow" in sys.modules:
        import mlflow

        if mlflow.active_run() is not None:
            from mlw_lib.tracking import log_figure_files

            log_figure_files(paths)
    return paths
