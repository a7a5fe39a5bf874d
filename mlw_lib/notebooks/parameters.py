"""A notebook's parameters: its single `parameters` cell, parameter files, validation."""

from __future__ import annotations

import ast
import io
import json
import tokenize
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mlw_lib.notebooks.catalog import resolve_notebook

PARAMETERS_TAG = "parameters"


class UnknownParameterError(ValueError):
    """A parameter name is not assigned in the notebook's `parameters` cell."""


class ParametersCellError(ValueError):
    """The notebook does not have exactly one cell tagged `parameters` of plain Python."""


def notebook_cells(path: Path) -> list[dict[str, Any]]:
    """The cells of a notebook file, read as plain JSON (nbformat is slow to import)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))["cells"]


def cell_source(cell: dict[str, Any]) -> str:
    """A cell's source text (stored as a string or a list of lines)."""
    source = cell.get("source", "")
    return source if isinstance(source, str) else "".join(source)


def parameters_cell_index(path: Path) -> int:
    """Index of the single cell tagged `parameters`; ParametersCellError if not exactly one."""
    tagged = [
        index
        for index, cell in enumerate(notebook_cells(path))
        if PARAMETERS_TAG in cell.get("metadata", {}).get("tags", [])
    ]
    if len(tagged) != 1:
        raise ParametersCellError(
            f"{Path(path).name}: expected exactly one cell tagged {PARAMETERS_TAG!r}, "
            f"found {len(tagged)}"
        )
    return tagged[0]


def literal_type_name(source: str) -> str:
    """Type name of a literal's value (`"1"` -> `int`), or `"None"` if not a literal."""
    try:
        return type(ast.literal_eval(source)).__name__
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return "None"


def comments_by_line(source: str) -> dict[int, str]:
    """1-based line number -> text of the `#` comment on that line."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {
        token.start[0]: token.string.lstrip("#").strip()
        for token in tokens
        if token.type == tokenize.COMMENT
    }


def assigned_names(target: ast.expr) -> list[str]:
    """Names bound by an assignment target (`a`, or `a, b`)."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, ast.Tuple | ast.List):
        return [name for element in target.elts for name in assigned_names(element)]
    return []


def parse_parameters_source(source: str) -> dict[str, dict[str, str]]:
    """Parameters of a python parameters cell: name -> {default, inferred_type, help}.

    `default` is the value's source text; `inferred_type` the annotation, else the literal's
    type; `help` the comment on the assignment's lines. Raises SyntaxError on non-Python.
    """
    tree = ast.parse(source)
    comments = comments_by_line(source)
    parameters = {}
    for statement in tree.body:
        if isinstance(statement, ast.Assign):
            targets, annotation = statement.targets, None
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            targets, annotation = [statement.target], ast.unparse(statement.annotation)
        else:
            continue
        default = ast.get_source_segment(source, statement.value) or ""
        lines = range(statement.lineno, (statement.end_lineno or statement.lineno) + 1)
        help_text = next((comments[line] for line in reversed(lines) if line in comments), "")
        for target in targets:
            for name in assigned_names(target):
                parameters[name] = {
                    "default": default,
                    "inferred_type": annotation or literal_type_name(default),
                    "help": help_text,
                }
    return parameters


def notebook_parameters(path: Path) -> dict[str, dict[str, str]]:
    """Parameters of a notebook: name -> {default (source text), inferred_type, help}.

    The parameters cell is parsed with `ast` (no papermill import, so `python -m mlw_lib list`
    is fast; papermill's line-based inspection also drops multi-line values). A cell that is
    not plain Python raises ParametersCellError.
    """
    index = parameters_cell_index(path)
    source = cell_source(notebook_cells(path)[index])
    try:
        return parse_parameters_source(source)
    except SyntaxError as error:
        raise ParametersCellError(
            f"{Path(path).name}: the parameters cell is not plain Python ({error.msg})"
        ) from error


def parameter_values(name: str | Path, namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The notebook's parameters with their current values in `namespace` (e.g. `globals()`
    after the injected-parameters cell), in declaration order: to log to MLflow and to build
    configs with `TrainConfig.from_params` / `MultilevelConfig.from_params`."""
    names = list(notebook_parameters(resolve_notebook(name)))
    missing = [key for key in names if key not in namespace]
    if missing:
        raise KeyError(f"parameters not defined in the namespace: {', '.join(missing)}")
    return {key: namespace[key] for key in names}


def load_parameter_file(path: Path) -> dict[str, Any]:
    """Read a YAML parameter file; it must hold a mapping of parameter names to values."""
    with open(path, encoding="utf-8") as handle:
        loaded = yaml.safe_load(handle)
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ValueError(
            f"{path}: a parameter file must be a YAML mapping of name: value, "
            f"got {type(loaded).__name__}"
        )
    return loaded


def validate_parameters(path: Path, params: Mapping[str, Any]) -> None:
    """Raise UnknownParameterError if any name in `params` is not a parameter of the notebook."""
    valid = notebook_parameters(path)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise UnknownParameterError(
            f"unknown parameter(s) {', '.join(unknown)} for notebook {Path(path).name}; "
            f"valid parameters: {', '.join(valid) or 'none'}"
        )


def merge_parameters(
    parameter_file: Path | None = None, parameters: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Parameters from the file, then explicit ones on top."""
    merged = load_parameter_file(parameter_file) if parameter_file is not None else {}
    merged.update(parameters or {})
    return merged
