"""Command line: `python -m mlw_lib {list,run,run-all,sweep,prepare-ci}`.

Parameter values are YAML scalars or flow collections: `-p epochs 3` is an int,
`-p widths "[512, 256]"` a list, `-p lr 1e-3` a float.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

import yaml

from mlw_lib import notebooks

SWEEP_HELP = """\
Grid values: -g NAME V1,V2,... splits on commas and reads each value as YAML
(-g lr 0.1,0.01 -g seed 0,1,2). A value that starts with '[' is read as a YAML list
of values instead, which is how to sweep list-valued parameters or strings with
commas: -g widths "[[64], [128, 64]]" runs widths=[64] and widths=[128, 64].
"""

BATCH_RESUME_HELP = (
    "continue an interrupted batch: notebooks whose newest execution with the same parameters "
    "finished are not run again, an unfinished one continues, the rest run"
)


def parse_value(text: str) -> Any:
    """Read a command-line value as YAML, numbers in any notation (`1e-3` is a float)."""
    return notebooks.load_yaml(text) if text.strip() else text


def parse_grid_values(text: str) -> list[Any]:
    """`0.1,0.01` -> [0.1, 0.01]; `[[64], [128]]` -> [[64], [128]]."""
    if text.lstrip().startswith("["):
        values = parse_value(text)
        if not isinstance(values, list):
            raise ValueError(f"grid values {text!r} must be a YAML list")
        return values
    return [parse_value(item) for item in text.split(",")]


def collect_parameters(pairs: list[list[str]] | None) -> dict[str, Any]:
    """[[name, value], ...] from repeated `-p NAME VALUE` -> {name: parsed value}."""
    return {name: parse_value(value) for name, value in pairs or []}


def add_parameter_options(parser: argparse.ArgumentParser) -> None:
    """`-p NAME VALUE` (repeatable), `-f FILE`, `--timeout S`."""
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        metavar=("NAME", "VALUE"),
        help="set a parameter (value read as YAML); repeatable; overrides -f",
    )
    parser.add_argument(
        "-f", "--parameter-file", type=Path, help="YAML file of parameters (name: value)"
    )
    parser.add_argument(
        "--timeout",
        type=int,
        default=None,
        help="per-cell execution timeout in seconds (default: none; a training loop that "
        "stops making progress raises by itself)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser with one subcommand per entry point."""
    parser = argparse.ArgumentParser(prog="python -m mlw_lib", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("list", help="list notebooks with their parameters and defaults")

    run = commands.add_parser("run", help="run one notebook with papermill")
    run.add_argument("name", help="notebook number (01), key (01_mlp_mnist), file or path")
    add_parameter_options(run)
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the newest unfinished execution of the notebook (killed or failed) "
        "with its own parameters; finished (method, seed) runs load from their checkpoints",
    )

    run_all = commands.add_parser("run-all", help="run every notebook in order")
    run_all.add_argument(
        "--params",
        metavar="SET",
        help="parameter set (e.g. ci, paper): params/SET/<key>.yaml, then one more run per "
        "params/SET/<key>.<variant>.yaml",
    )
    run_all.add_argument("--resume", action="store_true", help=BATCH_RESUME_HELP)
    run_all.add_argument(
        "--timeout",
        type=int,
        default=None,
        help="per-cell execution timeout in seconds (default: none; a training loop that "
        "stops making progress raises by itself)",
    )

    sweep = commands.add_parser(
        "sweep",
        help="run one notebook over a grid of parameter values",
        description="Run the Cartesian product of the grid.\n\n" + SWEEP_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sweep.add_argument("name", help="notebook number (01), key (01_mlp_mnist), file or path")
    sweep.add_argument(
        "-g",
        "--grid",
        nargs=2,
        action="append",
        required=True,
        metavar=("NAME", "VALUES"),
        help="grid axis: comma-separated values, or a YAML list starting with '['",
    )
    add_parameter_options(sweep)
    sweep.add_argument("--resume", action="store_true", help=BATCH_RESUME_HELP)

    commands.add_parser(
        "prepare-ci", help="write runs/ci/<key>.ipynb with params/ci/<key>.yaml injected"
    )
    return parser


def command_list() -> None:
    """Print each notebook and its parameters."""
    for path in notebooks.list_notebooks():
        print(path.stem)
        for name, info in notebooks.notebook_parameters(path).items():
            comment = f"  # {info['help']}" if info["help"] else ""
            default = " ".join(info["default"].split())
            print(f"    {name} = {default}{comment}")


def dispatch(args: argparse.Namespace) -> list[Path]:
    """Run the chosen subcommand; return the notebooks it wrote."""
    if args.command == "list":
        command_list()
        return []
    if args.command == "run":
        return [
            notebooks.run_notebook(
                args.name,
                parameters=collect_parameters(args.parameter),
                parameter_file=args.parameter_file,
                timeout=args.timeout,
                resume=args.resume,
            )
        ]
    if args.command == "run-all":
        return notebooks.run_all(args.params, timeout=args.timeout, resume=args.resume)
    if args.command == "sweep":
        grid = {name: parse_grid_values(values) for name, values in args.grid}
        return notebooks.run_sweep(
            args.name,
            grid,
            parameters=collect_parameters(args.parameter),
            parameter_file=args.parameter_file,
            timeout=args.timeout,
            resume=args.resume,
        )
    return notebooks.prepare_ci()


def resume_command(args: argparse.Namespace, argv: list[str]) -> str:
    """The command that continues this interrupted one ('' for commands without --resume)."""
    if args.command == "run":
        return f"python -m mlw_lib run {args.name} --resume"
    if args.command in ("run-all", "sweep"):
        again = argv if "--resume" in argv else [*argv, "--resume"]
        return shlex.join(["python", "-m", "mlw_lib", *again])
    return ""


def one_line(error: BaseException) -> str:
    """The error message with its whitespace (newlines included) collapsed."""
    return " ".join(str(error).split())


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors print one line to stderr and return 2."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("papermill").setLevel(logging.WARNING)
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    for stop in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, `kill`: stop the kernel, end cleanly
        signal.signal(stop, notebooks.stop_executions)
    try:
        written = dispatch(args)
    except KeyboardInterrupt:
        again = resume_command(args, argv)
        print(f"mlw: interrupted{f'; continue with: {again}' if again else ''}", file=sys.stderr)
        return 130
    except (ValueError, OSError, yaml.YAMLError) as error:
        print(f"mlw: error: {one_line(error)}", file=sys.stderr)
        return 2
    except notebooks.NotebookExecutionError as error:
        print(f"mlw: error: {one_line(error)}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
