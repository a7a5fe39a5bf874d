"""A notebook's parameters: its single `parameters` cell, parameter files, validation."""

from __future__ import annotations

import ast
import io
import json
import math
import re
import tokenize
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mlw_lib.notebooks.catalog import resolve_notebook

PARAMETERS_TAG = "parameters"


class UnknownParameterError(ValueError):
    """A parameter name is not assigned in the notebook's `parameters` cell."""


class ParameterTypeError(ValueError):
    """A parameter's value does not have the type of the notebook's default."""


class ParameterFileError(ValueError):
    """A parameter file is missing, not YAML, or not a mapping of names to values."""


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
    value = literal_value(source)
    return "None" if value is None else type(value).__name__


def literal_value(source: str) -> Any:
    """The value of a literal's source text, or None when it is not a literal."""
    try:
        return ast.literal_eval(source)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


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


class ParameterLoader(yaml.SafeLoader):
    """YAML with numbers in any notation: `1e-3` and `5E+4` are floats, as in YAML 1.2 and
    Python (YAML 1.1, PyYAML's default, reads a float without a dot as a string)."""


ParameterLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """`text` read as YAML by `ParameterLoader` (numbers in any notation, at any depth)."""
    return yaml.load(text, Loader=ParameterLoader)  # noqa: S506 (a SafeLoader subclass)


def load_parameter_file(path: Path) -> dict[str, Any]:
    """Read a YAML parameter file; it must hold a mapping of parameter names to values."""
    path = Path(path)
    if not path.is_file():
        problem = "is a folder" if path.is_dir() else "does not exist"
        raise ParameterFileError(f"parameter file {path} {problem}; give a YAML file (-f FILE)")
    try:
        loaded = load_yaml(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ParameterFileError(f"{path} is not valid YAML: {error}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ParameterFileError(
            f"{path}: a parameter file must be a YAML mapping of name: value, "
            f"got {type(loaded).__name__}"
        )
    keys = [key for key in loaded if not isinstance(key, str)]
    if keys:
        raise ParameterFileError(f"{path}: parameter names must be text, got {keys}")
    return loaded


def type_problem(value: Any, default: Any) -> str | None:
    """Why `value` cannot stand where the notebook has the literal `default`, or None.

    An int takes an int, a float a finite int or float, a bool a bool, a string a string;
    a non-empty list takes a non-empty list whose items fit its first item; None takes all."""
    kind = type(default)
    if default is None:
        return None
    if isinstance(default, list):
        if not isinstance(value, list):
            return f"a list like {default!r}"
        if default and not value:
            return f"a non-empty list like {default!r}"
        for item in value if default else ():
            if type_problem(item, default[0]):
                return f"a list of {type(default[0]).__name__}s like {default!r}"
        return None
    if kind is float:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return None if number and math.isfinite(value) else f"a finite number like {default!r}"
    if kind is int and isinstance(value, bool):
        return f"an integer like {default!r}"
    return None if isinstance(value, kind) else f"{_article(kind)} like {default!r}"


def _article(kind: type) -> str:
    return {int: "an integer", bool: "True or False", str: "a string"}.get(kind, kind.__name__)


def validate_parameters(path: Path, params: Mapping[str, Any]) -> None:
    """Refuse names that are not parameters of the notebook (UnknownParameterError) and
    values whose type does not fit the notebook's default (ParameterTypeError)."""
    valid = notebook_parameters(path)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise UnknownParameterError(
            f"unknown parameter(s) {', '.join(unknown)} for notebook {Path(path).name}; "
            f"valid parameters: {', '.join(valid) or 'none'}"
        )
    for name, value in params.items():
        problem = type_problem(value, literal_value(valid[name]["default"]))
        if problem:
            raise ParameterTypeError(
                f"parameter {name} = {value!r} ({type(value).__name__}) does not fit notebook "
                f"{Path(path).name}: expected {problem}, the form of its default "
                f"{valid[name]['default']} ({valid[name]['help'] or name})"
            )


def merge_parameters(
    parameter_file: Path | None = None, parameters: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Parameters from the file, then explicit ones on top."""
    merged = load_parameter_file(parameter_file) if parameter_file is not None else {}
    merged.update(parameters or {})
    return merged
