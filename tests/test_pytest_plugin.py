"""The pytest plugin, run for real with ``pytester`` (pytest in a temporary directory)."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from torchsurgeon import UPDATE_ENV

MODELS = """
from torch import nn

def build(n_classes=10, in_channels=1):
    return nn.Sequential(
        nn.Conv2d(in_channels, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, n_classes)
    )
"""


@pytest.fixture
def pt(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(netlib=MODELS)
    pytester.syspathinsert()
    return pytester


def test_registered_through_the_pytest11_entry_point() -> None:
    found = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert found["torchsurgeon"] == "torchsurgeon.pytest_plugin"


def test_option_group_and_marker_are_registered(pt: pytest.Pytester) -> None:
    helped = pt.runpytest("--help")
    helped.stdout.fnmatch_lines(
        ["torchsurgeon shape contracts:", "  --torchsurgeon-update", "*rewrite architecture lockfiles*"]
    )
    markers = pt.runpytest("--markers")
    markers.stdout.fnmatch_lines(["@pytest.mark.shape_contract(input, output=None, *): after the test body*"])


def test_assertrepr_shows_the_layers_that_changed_the_shape(pt: pytest.Pytester) -> None:
    pt.makepyfile(
        """
        from netlib import build
        from torchsurgeon import paramcount

        def test_right():
            assert paramcount(build(10), (1, 16, 16)).output_shape == (1, 10)

        def test_wrong():
            assert paramcount(build(9), (1, 16, 16)).output_shape == (1, 10)

        def test_rank():
            assert (1, 10, 1) == paramcount(build(10), (1, 16, 16)).output_shape

        def test_list():
            assert paramcount(build(10), (1, 16, 16)).output_shape == [1, 10]

        def test_plain_tuples_untouched():
            assert (1, 9) == (1, 10)
        """
    )
    result = pt.runpytest()
    result.assert_outcomes(passed=1, failed=4)
    result.stdout.fnmatch_lines(
        [
            "E       assert (1, 9) == (1, 10)",
            "E         dimension 1 is 9, expected 10",
            "E         Last layers that changed the shape:",
            "E         Layer    Type     Input shape    Output shape      Params",
            "E         -------  -------  -------------  --------------  --------",
            "E         2        Flatten  (1, 4, 1, 1)   (1, 4)                 0",
            "E         3        Linear   (1, 4)         (1, 9)                45",
        ]
    )
    result.stdout.fnmatch_lines(
        ["E       assert (1, 10, 1) == (1, 10)", "E         output_shape has 2 dimensions, expected 3"]
    )
    result.stdout.fnmatch_lines(["E         output_shape is a tuple: a tuple never equals a list*"])
    # a comparison of plain tuples keeps pytest's own explanation
    result.stdout.fnmatch_lines(["E       assert (1, 9) == (1, 10)", "E         At index 1 diff: 9 != 10"])


def test_marker_on_a_test_that_returns_the_model(pt: pytest.Pytester) -> None:
    pt.makepyfile(
        """
        import pytest
        from netlib import build

        @pytest.mark.shape_contract(input=(1, 16, 16), output=(10,), max_params=100)
        def test_good():
            return build(10)

        @pytest.mark.shape_contract(input=(1, 16, 16), output=(10,), max_params=60)
        def test_bad():
            return build(9)
        """
    )
    result = pt.runpytest("-W", "error::pytest.PytestReturnNotNoneWarning")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_bad _*",
            "Shape contract broken: Sequential, input (1, 16, 16), batch 1",
            "Field       Expected    Got",
            "----------  ----------  ------",
            "output      (1, 10)     (1, 9)",
            "max_params  ≤ 60        85",
            "",
            "Last layers that changed the shape:",
            "*",
            "*",
            "2        Flatten  (1, 4, 1, 1)   (1, 4)                 0",
            "3        Linear   (1, 4)         (1, 9)                45",
        ]
    )


def test_marker_with_a_model_fixture_runs_after_the_body(pt: pytest.Pytester) -> None:
    pt.makepyfile(
        """
        import pytest
        from netlib import build

        ORDER = []

        @pytest.fixture
        def model():
            return build(10, in_channels=3)

        @pytest.mark.shape_contract(input=(3, 16, 16), output=(10,))
        def test_good(model):
            ORDER.append("body")

        @pytest.mark.shape_contract(input=(1, 16, 16), output=(10,))
        def test_invalid_layer(model):
            ORDER.append("body")

        def test_body_ran_first():
            assert ORDER == ["body", "body"]
        """
    )
    result = pt.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_invalid_layer _*",
            "Shape contract broken: Sequential, input (1, 16, 16), batch 1",
            "*",
            "*",
            "layer 0 (Conv2d)  in_channels=3  in_channels=1",
            "  0: fold it with adapt_input_channels(model, 1)",
        ]
    )


def test_marker_misuse_is_explained(pt: pytest.Pytester) -> None:
    pt.makepyfile(
        """
        import pytest
        from netlib import build

        @pytest.mark.shape_contract(input=(1, 16, 16))
        def test_no_model():
            pass

        @pytest.mark.shape_contract(input=(1, -16, 16))
        def test_negative():
            return build()

        @pytest.mark.shape_contract(input=(1, 16, 16), outptu=(10,))
        def test_typo():
            return build()
        """
    )
    result = pt.runpytest()
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(
        [
            "@pytest.mark.shape_contract on test_no_model: the test returned NoneType and has no `model` fixture*",
            "@pytest.mark.shape_contract on test_negative: input=(1, -16, 16): dimension 1 is -16*",
            "@pytest.mark.shape_contract on test_typo:*unexpected keyword argument 'outptu'",
        ]
    )
    assert "During handling of the above exception" not in result.stdout.str()  # one message each (a probe)


def test_fixture(pt: pytest.Pytester) -> None:
    pt.makepyfile(
        """
        from netlib import build

        def test_good(shape_contract):
            result = shape_contract(build(10), input=(1, 16, 16), output=(10,), params=90)
            assert result.ok and result.report.total == 90

        def test_bad(shape_contract):
            shape_contract(build(9), input=(1, 16, 16), output=(10,))
        """
    )
    result = pt.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            ">       shape_contract(build(9), input=(1, 16, 16), output=(10,))",
            "E       torchsurgeon.errors.ContractError: Shape contract broken: Sequential, input (1, 16, 16), batch 1",
            "E       Field    Expected    Got",
            "E       -------  ----------  ------",
            "E       output   (1, 10)     (1, 9)",
        ]
    )


@pytest.mark.slow
def test_update_option_rewrites_lockfiles(pt: pytest.Pytester) -> None:
    pt.makepyfile(
        test_arch="""
        import pytest
        import netlib
        from torchsurgeon import assert_matches_lock

        def test_lock():
            assert_matches_lock(netlib.build(netlib.N), "arch/net.lock.json", (1, 16, 16))

        @pytest.mark.shape_contract(input=(1, 16, 16), lock="arch/marked.lock.json")
        def test_marked():
            return netlib.build(netlib.N)
        """
    )
    pt.makepyfile(netlib=MODELS + "\nN = 10\n")
    lock = pt.path / "arch" / "net.lock.json"

    missing = pt.runpytest()
    missing.assert_outcomes(failed=2)
    missing.stdout.fnmatch_lines(
        [
            "E       torchsurgeon.errors.ConfigError: lockfile arch/net.lock.json does not exist*",
            "@pytest.mark.shape_contract on test_marked: lockfile arch/marked.lock.json does not exist*",
        ]
    )
    assert not lock.exists()

    created = pt.runpytest("--torchsurgeon-update")
    created.assert_outcomes(passed=2)
    created.stdout.fnmatch_lines(["torchsurgeon: --torchsurgeon-update: architecture lockfiles are rewritten*"])
    assert lock.is_file() and (pt.path / "arch" / "marked.lock.json").is_file()
    assert UPDATE_ENV not in os.environ  # restored after the inner run

    assert pt.runpytest().ret == 0
    pt.makepyfile(netlib=MODELS + "\nN = 9\n")
    changed = pt.runpytest()
    changed.assert_outcomes(failed=2)
    changed.stdout.fnmatch_lines(
        [
            "E       torchsurgeon.errors.ContractError: Lockfile arch/net.lock.json: 1 layer differs*",
            "E       Layer    Type    Change    Locked                     Now",
            "E       *",
            "E       3        Linear  changed   output (1, 10), params 50  output (1, 9), params 45",
        ]
    )
    assert pt.runpytest("--torchsurgeon-update").ret == 0
    assert pt.runpytest().ret == 0


@pytest.mark.slow  # over 0.6 s in make check (make test runs it)
def test_marker_lock_path_is_relative_to_the_rootdir_not_the_cwd(
    pt: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pt.makeini("[pytest]\n")  # the project root: pytest's rootdir from any subfolder
    absolute = pt.path / "elsewhere" / "abs.lock.json"
    pt.mkdir("tests")
    (pt.path / "tests" / "test_arch.py").write_text(
        "import pytest\n"
        "import netlib\n\n"
        '@pytest.mark.shape_contract(input=(1, 16, 16), lock="tests/arch/marked.lock.json")\n'
        "def test_relative():\n"
        "    return netlib.build()\n\n"
        f"@pytest.mark.shape_contract(input=(1, 16, 16), lock={str(absolute)!r})\n"
        "def test_absolute():\n"
        "    return netlib.build()\n"
    )
    lock = pt.path / "tests" / "arch" / "marked.lock.json"

    monkeypatch.chdir(pt.path / "tests")  # pytest started from a subfolder of the project
    assert pt.runpytest("--torchsurgeon-update").ret == 0
    assert lock.is_file() and absolute.is_file()
    assert not (pt.path / "tests" / "tests").exists()  # no second lockfile under the cwd
    written = lock.read_text()

    monkeypatch.chdir(pt.path)  # and checked from the root: the same file
    pt.runpytest().assert_outcomes(passed=2)
    assert pt.runpytest("--torchsurgeon-update").ret == 0
    assert lock.read_text() == written and not (pt.path / "arch").exists()

    pt.makepyfile(netlib=MODELS.replace("n_classes=10", "n_classes=9"))
    monkeypatch.chdir(pt.path / "tests")
    changed = pt.runpytest()
    changed.assert_outcomes(failed=2)
    changed.stdout.fnmatch_lines(["Lockfile arch/marked.lock.json: 1 layer differs*"])  # shown from the cwd


def test_loading_the_plugin_module_imports_no_torch() -> None:
    # pytest loads the plugin in every run of every project in the environment: it must stay light.
    # The package __init__ is lazy (PEP 562), so importing the entry point module does not import torch.
    code = (
        "import sys, torchsurgeon.pytest_plugin\n"
        "print(sorted(m for m in ('torch', 'torchsurgeon.analysis') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
