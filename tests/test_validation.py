"""Bad settings are refused before any work starts, with a message that names the setting,
the value and what is accepted: config fields, a comparison's plan, notebook parameters given
on the command line or in a YAML file."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import toy_dataset

from mlw_lib import notebooks
from mlw_lib.experiments import check_plan, compare
from mlw_lib.models import MLP
from mlw_lib.multilevel import MultilevelConfig
from mlw_lib.multilevel.cycle import FASCycle
from mlw_lib.paths import repo_root
from mlw_lib.training import TrainConfig, train

MNIST_NOTEBOOK = repo_root() / "notebooks" / "01_mlp_mnist.ipynb"


def call(fields: dict) -> str:
    """{"lr": 0} -> "lr=0"."""
    return ", ".join(f"{name}={value!r}" for name, value in fields.items())


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"epochs": math.inf}, "epochs must be a finite number in (0, inf], got inf"),
        ({"epochs": math.nan}, "epochs must be a finite number"),
        ({"epochs": 0}, "epochs must be a finite number in (0, inf]"),
        ({"epochs": "3"}, "epochs must be a finite number in (0, inf], got '3'"),
        ({"batch_size": 32.5}, "batch_size must be a positive integer, got 32.5"),
        ({"batch_size": True}, "batch_size must be a positive integer, got True"),
        ({"lr": 0}, "lr must be a finite number in (0, inf], got 0"),
        ({"lr": []}, "lr must be a finite number in (0, inf], got []"),
        ({"lr": [0.1, -1.0]}, "lr (each entry) must be a finite number in (0, inf], got -1.0"),
        ({"lr": "0.1"}, "lr must be a finite number in (0, inf], got '0.1'"),
        ({"momentum": 1.0}, "momentum must be a finite number in [0, 1), got 1.0"),
        ({"weight_decay": -1e-4}, "weight_decay must be a finite number in [0, inf]"),
        ({"seed": -1}, "seed must be a non-negative integer, got -1"),
        ({"eval_every": -1.0}, "eval_every must be a finite number in (0, inf]"),
        ({"eval_batch_size": 0}, "eval_batch_size must be a positive integer, got 0"),
        ({"crop_padding": -2}, "crop_padding must be a non-negative integer, got -2"),
        ({"augment": "yes"}, "augment must be True or False, got 'yes'"),
        ({"channels_last": 1}, "channels_last must be True or False, got 1"),
        ({"device": "gpu"}, "device must be 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
        ({"device": 0}, "device must be 'cpu', 'cuda' or 'cuda:N', got 0"),
        ({"schedule": "step"}, "unknown schedule 'step'; choose one of ['constant', 'cosine']"),
    ],
)
def test_train_config_refuses_bad_fields(fields: dict, message: str, refusals) -> None:
    with refusals.error(f"TrainConfig({call(fields)})", ValueError, "^" + re.escape(message)):
        TrainConfig(**fields)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ratio": "0.5"}, "ratio must be a finite number in [0.25, 1), got '0.5'"),
        ({"ratio": math.nan}, "ratio must be a finite number in [0.25, 1), got nan"),
        ({"tau_scale": math.inf}, "tau_scale must be a finite number in [0, inf], got inf"),
        ({"correction_damping": -0.5}, "correction_damping must be a finite number in [0, inf]"),
        ({"seed": -3}, "seed must be a non-negative integer, got -3"),
        ({"nu_post": 1.5}, "nu_post must be a non-negative integer, got 1.5"),
        ({"levels": 2.0}, "levels must be a positive integer, got 2.0"),
        ({"tau": True}, "unknown tau True; choose one of"),
    ],
)
def test_multilevel_config_refuses_bad_fields(fields: dict, message: str, refusals) -> None:
    what = f"MultilevelConfig({call(fields)})"
    with refusals.error(what, ValueError, "^" + re.escape(message)):
        MultilevelConfig(**fields)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"nu_pre": 0}, "nu_pre=0 with levels=1 takes no optimizer step"),
        ({"nu_pre": 0, "nu_post": 0, "levels": 2}, "nu_pre=0 with levels=2 takes no optimizer"),
    ],
)
def test_training_that_takes_no_step_is_refused_instead_of_hanging(
    fields, message, refusals
) -> None:
    config = MultilevelConfig(**fields)  # allowed as a cycle: the invariant tests use it
    what = f"train(..., MultilevelConfig({call(fields)})) (used to hang forever)"
    with refusals.error(what, ValueError, message):
        train(MLP(12, [8], 4), toy_dataset(), TrainConfig(epochs=1), config)
    with pytest.raises(ValueError, match="method 'm': " + message):
        check_plan(TrainConfig(), {"m": config}, [0])


def test_configs_that_take_a_step_are_accepted() -> None:
    MultilevelConfig(levels=2, nu_pre=0, nu_post=1).check_takes_steps()  # fine post-smooths
    TrainConfig(epochs=2, lr=[1, 0.5], momentum=0, weight_decay=0, device="cuda:1")


@pytest.mark.parametrize(
    ("seeds", "methods", "message"),
    [
        ([], {"single-level": MultilevelConfig()}, "seeds must be a non-empty list"),
        (3, {"single-level": MultilevelConfig()}, "seeds must be a non-empty list"),
        ([0, 0], {"single-level": MultilevelConfig()}, r"seeds must be distinct, got \[0, 0\]"),
        (["a"], {"single-level": MultilevelConfig()}, "each seed must be a non-negative integer"),
        ([0], {}, "no methods to compare"),
        (
            [0],
            {"single-level": MultilevelConfig(), "V3": MultilevelConfig(levels=3)},
            r"method 'V3': lr must be a positive number or 3 positive numbers",
        ),
    ],
)
def test_a_plan_that_would_fail_part_way_is_refused(seeds, methods, message, refusals) -> None:
    levels = [config.levels for config in methods.values()]
    what = f"compare(..., lr=[0.1, 0.1], levels {levels}, seeds={seeds!r})"
    with refusals.error(what, ValueError, message):
        check_plan(TrainConfig(lr=[0.1, 0.1]), methods, seeds)


def test_compare_checks_its_plan_before_the_first_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FASCycle, "run_cycle", lambda self: pytest.fail("trained before checking"))
    methods = {"single-level": MultilevelConfig(), "V3": MultilevelConfig(levels=3)}
    with pytest.raises(ValueError, match="method 'V3': lr must be"):
        compare(lambda: MLP(12, [8], 4), toy_dataset(), TrainConfig(lr=[0.1, 0.1]), methods, [0])


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_machine_without_it_is_refused_with_the_fix(refusals) -> None:
    what = "compare(...) with device='cuda' on a machine without CUDA"
    with refusals.error(what, ValueError, "has no CUDA device; set device to 'cpu'"):
        check_plan(TrainConfig(device="cuda"), {"single-level": MultilevelConfig()}, [0])


def test_a_cycle_that_spends_no_work_raises_instead_of_hanging(
    monkeypatch: pytest.MonkeyPatch, refusals
) -> None:
    monkeypatch.setattr(FASCycle, "run_cycle", lambda self: None)
    what = "a training loop whose cycle makes no progress (simulated)"
    with refusals.error(what, RuntimeError, "spent no work.*would never end"):
        train(MLP(12, [8], 4), toy_dataset(), TrainConfig(epochs=1, batch_size=32))


# --- notebook parameters -----------------------------------------------------------------------


def test_numbers_in_any_notation_at_any_depth_are_numbers(tmp_path: Path) -> None:
    value = notebooks.load_yaml("[1e-3, 5E+4, -2.5e-1, 3, {a: [7e0]}, 1e-3x, e5]")
    assert value == [0.001, 50000.0, -0.25, 3, {"a": [7.0]}, "1e-3x", "e5"]
    assert isinstance(value[3], int)
    file = tmp_path / "01_mlp_mnist.yaml"
    file.write_text("weight_decay: 5e-4\nlr: [1e-3, 1E-3]\n", encoding="utf-8")
    assert notebooks.load_parameter_file(file) == {"weight_decay": 5e-4, "lr": [1e-3, 1e-3]}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"epochs": "abc"},
            r"epochs = 'abc' \(str\) does not fit .*expected a finite number like 3.0",
        ),
        ({"seeds": []}, r"seeds = \[\] \(list\) .*expected a non-empty list like \[0, 1, 2\]"),
        ({"levels": 2}, r"levels = 2 \(int\) .*expected a list like \[1, 2, 3\]"),
        ({"ratio": "0.5"}, "ratio = '0.5' .*expected a finite number like 0.5"),
        ({"batch_size": 32.5}, "batch_size = 32.5 .*expected an integer like 128"),
        ({"epochs": float("inf")}, "epochs = inf .*expected a finite number"),
        ({"lr": ["a", 0.1]}, r"lr = \['a', 0.1\] .*expected a list of floats"),
        ({"hidden": [512, 2.5]}, "hidden = .*expected a list of ints like"),
        ({"tau": 1}, "tau = 1 .*expected a string like 'cycle'"),
        ({"epochs": True}, "epochs = True .*expected a finite number"),
        ({"train_subset": 0.5}, "train_subset = 0.5 .*expected an integer like 0"),
    ],
)
def test_parameter_values_of_the_wrong_type_are_refused(
    params: dict, message: str, refusals
) -> None:
    ((name, value),) = params.items()
    what = f"python -m mlw_lib run 01 -p {name} {value!r} (or in a -f file)"
    with refusals.error(what, notebooks.ParameterTypeError, message):
        notebooks.validate_parameters(MNIST_NOTEBOOK, params)


def test_parameter_values_of_a_compatible_type_are_accepted() -> None:
    notebooks.validate_parameters(
        MNIST_NOTEBOOK,
        {"lr": [1, 0.5], "tau_scale": 0, "seeds": [4], "epochs": 0.5, "hidden": [64]},
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "is a folder; give a YAML file"),
        ("{1: 2}\n", r"parameter names must be text, got \[1\]"),
        ("- 1\n- 2\n", "must be a YAML mapping of name: value, got list"),
        ("a: [1, 2\n", "is not valid YAML"),
    ],
)
def test_bad_parameter_files_name_the_problem(
    tmp_path: Path, content, message: str, refusals
) -> None:
    path = tmp_path / "params.yaml"
    if content is None:
        path.mkdir()
    else:
        path.write_text(content, encoding="utf-8")
    what = "run -f params.yaml, " + ("a folder" if content is None else f"holding {content!r}")
    with refusals.error(what, notebooks.ParameterFileError, message):
        notebooks.load_parameter_file(path)


def test_a_sweep_checks_every_grid_point_before_the_first_run(tmp_path: Path, refusals) -> None:
    what = "python -m mlw_lib sweep 01 -g epochs 1,x"
    with refusals.error(what, notebooks.ParameterTypeError, "epochs = 'x'"):
        notebooks.run_sweep(MNIST_NOTEBOOK, {"epochs": [1, "x"]}, output_dir=tmp_path)
    assert not list(tmp_path.iterdir()), "nothing ran"


@pytest.mark.parametrize(
    "args",
    [
        ["run", "01", "-p", "epochs", "abc"],
        ["run", "01", "-p", "levels", "2"],
        ["run", "01", "-f", "."],
        ["sweep", "01", "-g", "seeds", "[[], [1]]"],
    ],
)
def test_cli_user_errors_are_one_line_before_any_heavy_import(args: list[str], refusals) -> None:
    code = (
        "import sys\nfrom mlw_lib.__main__ import main\nrc = main(sys.argv[1:])\n"
        "heavy = sorted({'torch', 'papermill', 'mlflow'} & set(sys.modules))\n"
        "print(rc, heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "2 []", result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlw: error: "), result.stderr
    refusals.seen("python -m mlw_lib " + " ".join(args), lines[0] + " (exit 2, no traceback)")


def test_numbers_in_exponent_notation_reach_the_notebook_as_numbers(refusals) -> None:
    assert notebooks.load_yaml("[1e-3, 1e-3]") == [0.001, 0.001]
    refusals.behaviour(
        'run 01 -p lr "[1e-3, 1e-3]", or `weight_decay: 5e-4` in a -f file',
        "read as numbers at any depth (YAML 1.1 had made them strings)",
    )


def labelled(x: torch.Tensor, y: torch.Tensor) -> SimpleNamespace:
    return SimpleNamespace(x_train=x, y_train=y, x_test=x, y_test=y)


@pytest.mark.parametrize(
    ("what", "data", "message"),
    [
        (
            "train an MLP(784, ...) on images (N, 1, 28, 28)",
            labelled(torch.randn(64, 1, 28, 28), torch.zeros(64, dtype=torch.int64)),
            r"MLP expects inputs of shape \(N, 784\), got \(1, 1, 28, 28\); flatten images",
        ),
        (
            "train with a label (7) outside the model's 4 classes",
            labelled(torch.randn(64, 784), torch.tensor([7] + [0] * 63)),
            "train labels run from 0 to 7, but the model has 4 outputs",
        ),
        (
            "train with float labels",
            labelled(torch.randn(64, 784), torch.zeros(64)),
            "train labels must be one integer per input",
        ),
        (
            "train with fewer labels than inputs",
            labelled(torch.randn(64, 784), torch.zeros(60, dtype=torch.int64)),
            "train split: 64 inputs but 60 targets",
        ),
    ],
)
def test_data_the_model_cannot_take_is_refused_before_training(
    what, data, message, refusals, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FASCycle, "run_cycle", lambda self: pytest.fail("trained"))
    with refusals.error(what, ValueError, message):
        train(MLP(784, [8], 4), data, TrainConfig(epochs=1, batch_size=16))


def test_compare_keeps_a_checkpoint_per_run_and_resumes_from_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    methods = {"single-level": MultilevelConfig(), "V-cycle, 2 levels": MultilevelConfig(levels=2)}
    config, seeds = TrainConfig(epochs=1, batch_size=32), [0, 1]

    def run():
        return compare(
            lambda: MLP(12, [8], 4), toy_dataset(), config, methods, seeds, checkpoint_dir=tmp_path
        )

    first = run().history
    names = sorted(path.name for path in tmp_path.glob("*.pt"))
    assert names == [
        f"{m}__seed{s}.pt" for m in ("V-cycle-2-levels", "single-level") for s in (0, 1)
    ]
    monkeypatch.setattr(FASCycle, "run_cycle", lambda self: pytest.fail("trained again"))
    again = run().history  # every run finished: each loads from its checkpoint
    columns = ["method", "seed", "work_units", "test_loss", "test_accuracy"]
    assert again[columns].equals(first[columns])


def test_the_bad_inputs_table_is_written_when_asked(tmp_path: Path) -> None:
    table = tmp_path / "table.md"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        f"{__file__}::test_train_config_refuses_bad_fields",
        "--bad-inputs-table",
        str(table),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in table.read_text().splitlines() if line.startswith("| 1 ")]
    assert rows and "TrainConfig(epochs=inf)" in rows[0] and "clear error" in rows[0]
