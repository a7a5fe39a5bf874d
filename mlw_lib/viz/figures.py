"""Save figures and results tables once, the same way: byte-stable PDF + PNG and a
Markdown `results.md` under `figures/<notebook>/`."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
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
    if log_to_mlflow:
        _log_to_active_run(paths)
    return paths


def _log_to_active_run(paths: list[Path]) -> None:
    """Log `paths` under `figures/` of the active MLflow run, if any."""
    # No run can be active in a process that never imported mlflow; skip its slow import.
    if "mlflow" in sys.modules:
        import mlflow

        if mlflow.active_run() is not None:
            from mlw_lib.tracking import log_figure_files

            log_figure_files(paths)


def markdown_table(table: pd.DataFrame) -> str:
    """`table` (index included) as a GitHub Markdown table."""
    frame = table.reset_index()
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * frame.shape[1]]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def save_results(notebook_key: str, title: str, sections: dict[str, object]) -> Path:
    """Write `figures/<notebook_key>/results.md`: `title`, then one `## heading` per section,
    a DataFrame or a mapping (name -> value) as a Markdown table, anything else as its text.
    Logged like a figure."""
    parts = [f"# {title}", "Written by the notebook from the runs of this execution."]
    for heading, body in sections.items():
        if isinstance(body, Mapping):
            body = pd.DataFrame({"value": {k: repr(v) for k, v in body.items()}})
        text = markdown_table(body) if isinstance(body, pd.DataFrame) else str(body)
        parts.append(f"## {heading}\n\n{text}")
    path = figures_dir(notebook_key) / "results.md"
    path.write_text("\n\n".join(parts) + "\n")
    _log_to_active_run([path])
    return path
