"""mlw: multilevel-in-width training (FAS over network width), Jupyter-first.

`import mlw_lib as mlw` gives the subpackages: `mlw.data`, `mlw.models`, `mlw.multilevel`,
`mlw.distributed` (torchrun), `mlw.parallel` (layer-parallel training),
`mlw.training`, `mlw.experiments`, `mlw.frontier`, `mlw.worst_case`, `mlw.tasks`,
`mlw.variants`, `mlw.baselines`, `mlw.tracking`,
`mlw.mlflow_ui`, `mlw.viz`, `mlw.notebooks`, `mlw.reproducibility`, `mlw.paths`,
`mlw.checks`. Each is imported on first access, so `import mlw_lib` and
`python -m mlw_lib list` do not pay for torch, MLflow, papermill or seaborn.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__version__ = "0.1.0"
__all__ = [
    "baselines",
    "checks",
    "data",
    "distributed",
    "experiments",
    "frontier",
    "mlflow_ui",
    "models",
    "multilevel",
    "notebooks",
    "parallel",
    "paths",
    "reproducibility",
    "tasks",
    "tracking",
    "training",
    "variants",
    "viz",
    "worst_case",
]


def __getattr__(name: str) -> ModuleType:
    """Import the subpackage `name` on first access (PEP 562)."""
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
