"""mlw: multilevel-in-width training (FAS over network width), Jupyter-first.

`import mlw_lib as mlw` gives the subpackages: `mlw.data`, `mlw.models`, `mlw.multilevel`,
`mlw.training`, `mlw.experiments`, `mlw.tracking`, `mlw.viz`, `mlw.notebooks`,
`mlw.reproducibility`.
"""

from . import (
    data,
    experiments,
    models,
    multilevel,
    notebooks,
    reproducibility,
    tracking,
    training,
    viz,
)

__version__ = "0.1.0"
__all__ = [
    "data",
    "experiments",
    "models",
    "multilevel",
    "notebooks",
    "reproducibility",
    "tracking",
    "training",
    "viz",
]
