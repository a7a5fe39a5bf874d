"""Run the numbered notebooks headlessly with papermill: one notebook, all of them, or a sweep.

Modules: `catalog` (finding notebooks and parameter files), `parameters` (the notebook's single
`parameters` cell, YAML parameter files, validation), `executions` (one folder per execution,
resume), `running` (papermill execution, run-all, CI preparation), `sweeps` (grids of
parameter values). Everything is re-exported here.

Parameter names are checked against the notebook's `parameters` cell before anything runs
(papermill itself only warns about unknown names). Executed copies go to the git-ignored
`runs/notebooks/` folder, never over the source; `prepare_ci` writes parameterised, unexecuted
copies to `runs/ci/` for `pytest --nbval-lax --nbval-current-env runs/ci/*.ipynb`. Headless
runs log one line per code cell as it starts (`01_mlp_mnist: cell 3/9 (12 s)`), unless
`TQDM_DISABLE` is set.

Parameter sets: `params/<set>/<key>.yaml` holds the parameters of notebook `<key>` in the set
(`ci`, `paper`). A notebook runs more than once in a set with one more file per run,
`params/<set>/<key>.<variant>.yaml`; `run-all --params <set>` runs `<key>.yaml` and then every
variant, writing the executed copy `<key>__<variant>.ipynb`. Example:
`params/paper/02_cnn_cifar10.fashion_mnist.yaml`. Other files in a set folder (such as
`02_cnn_cifar10_full_gpu.yaml`) are not run by `run-all`, only by `run NN -f FILE`. CI uses
`params/ci/<key>.yaml` only.
"""

from mlw_lib.notebooks.catalog import (
    NOTEBOOK_GLOB,
    UnknownNotebookError,
    list_notebooks,
    notebook_key,
    notebooks_dir,
    parameter_set_file,
    parameter_set_files,
    params_root,
    resolve_notebook,
)
from mlw_lib.notebooks.executions import Execution, ResumeError
from mlw_lib.notebooks.parameters import (
    PARAMETERS_TAG,
    ParameterFileError,
    ParametersCellError,
    ParameterTypeError,
    UnknownParameterError,
    load_parameter_file,
    load_yaml,
    merge_parameters,
    notebook_parameters,
    parameter_values,
    parameters_cell_index,
    parse_parameters_source,
    validate_parameters,
)
from mlw_lib.notebooks.running import (
    SWEEP_SEPARATOR,
    NotebookExecutionError,
    continue_notebook,
    headless_environment,
    kernel_transport,
    output_path_for,
    prepare_ci,
    progress_enabled,
    run_all,
    run_notebook,
    stop_executions,
)
from mlw_lib.notebooks.sweeps import grid_points, run_sweep, sweep_suffixes, value_slug

__all__ = [
    "Execution",
    "ResumeError",
    "NOTEBOOK_GLOB",
    "PARAMETERS_TAG",
    "SWEEP_SEPARATOR",
    "NotebookExecutionError",
    "ParameterFileError",
    "ParameterTypeError",
    "ParametersCellError",
    "UnknownNotebookError",
    "UnknownParameterError",
    "continue_notebook",
    "grid_points",
    "headless_environment",
    "kernel_transport",
    "list_notebooks",
    "load_parameter_file",
    "load_yaml",
    "merge_parameters",
    "notebook_key",
    "notebook_parameters",
    "notebooks_dir",
    "output_path_for",
    "parameter_set_file",
    "parameter_set_files",
    "parameter_values",
    "parameters_cell_index",
    "params_root",
    "parse_parameters_source",
    "prepare_ci",
    "progress_enabled",
    "resolve_notebook",
    "run_all",
    "run_notebook",
    "run_sweep",
    "stop_executions",
    "sweep_suffixes",
    "validate_parameters",
    "value_slug",
]
