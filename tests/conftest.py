"""Shared pytest configuration: the pytester plugin, --overwrite-expected, the ``expected_file`` fixture,
Hypothesis's profile, and one torch thread per pytest-xdist worker.

Hypothesis draws the same examples on every run (``derandomize``): a run that passes here passes in CI, whose
result decides whether a change lands.  ``HYPOTHESIS_PROFILE=explore`` draws new examples each run, with
``TORCHSURGEON_RULE_EXAMPLES=200`` for a deeper search (it found the rule bugs fixed on 2026-11-28).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))

from models import LARGEST_TORCHVISION

settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

pytest_plugins = ["pytester"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--overwrite-expected",
        action="store_true",
        default=False,
        help="rewrite the expected-output files in tests/expected/ instead of comparing",
    )


def pytest_configure(config: pytest.Config) -> None:
    """In a pytest-xdist worker (``make test``, ``make check``: ``-n 2``), torch computes on one thread: two
    workers with torch's default of one OpenMP thread per core would make four threads on two cores, each
    parallel region waiting for a thread the other worker keeps off its core."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup`` (``make test``, ``make check``): pytest-xdist's scheduling by scope, the scope of a test
    being :func:`xdist_group` of its id.  (pytest-xdist 3.8's own loadgroup reads ``xdist_group`` marks, but under
    pytest 9 its workers cannot add the group to the test ids it schedules by: every test was scheduled alone.)"""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class _Grouped(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid)

    return _Grouped(config, log)


_LARGEST_MODULES = ("tests/test_zoo_open_clip.py", "tests/test_zoo_monai.py")  # 1.8 and 1.1 GiB at their peaks
_LARGEST_TESTS = ("tests/test_memory.py::test_7b_decoder_on_meta_in_under_30_s_and_2_gib",)  # a process of 2 GiB
_SURGERY_ZOO = "tests/test_surgery_zoo.py::test_sum_fold_is_exact_and_recognised"


def xdist_group(nodeid: str) -> str:
    """The tests one pytest-xdist worker runs one after another: ``largest`` (the tests taking over a GiB or so: never
    two at once, each worker holding 1 GiB or more of its own), a zoo module (its tests share its ``_CACHE``), or the
    test alone.

    >>> xdist_group("tests/test_surgery_zoo.py::test_sum_fold_is_exact_and_recognised[vit_h_14]")
    'largest'
    >>> xdist_group("tests/test_zoo_timm.py::test_timm_model[resnet18]")
    'tests/test_zoo_timm.py'
    """
    path = nodeid.partition("::")[0]
    model = nodeid.removeprefix(f"{_SURGERY_ZOO}[").removesuffix("]")
    if path in _LARGEST_MODULES or nodeid in _LARGEST_TESTS or model in LARGEST_TORCHVISION:
        return "largest"
    return path if path.startswith("tests/test_zoo_") else nodeid


def pytest_collection_finish(session: pytest.Session) -> None:
    """Move what collection imported (torch, transformers, timm, ...: millions of objects that live as long as the
    session) out of the garbage collector's view: each full collection then scans only what the tests made.
    Without it, full collections took most of the zoo tests' time (235 s of 296 s, 2-core machine)."""
    gc.collect()
    gc.freeze()


@pytest.fixture
def expected_file(request: pytest.FixtureRequest) -> Callable[[str, str], None]:
    """``expected_file(name, text)``: assert ``text`` equals tests/expected/<name>; --overwrite-expected rewrites it."""

    def check(name: str, text: str) -> None:
        path = Path(__file__).parent / "expected" / name
        if request.config.getoption("--overwrite-expected"):
            path.write_text(text)
        assert text == path.read_text()

    return check


_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6") if sys.platform.startswith("linux") else None


@pytest.fixture(autouse=True)
def _free_memory_after_large_models(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests build models, some large: once a worker's memory has grown, free them and hand the memory back to the
    OS after the test.

    Keeps ``make test``'s peak at the largest single model instead of a high-water mark that only grows (glibc keeps
    freed arenas unless trimmed): also in the worker running the other tests while one runs the largest.
    """
    yield
    if _rss_bytes() > max(_RSS_TRIM, _after_trim[0] + _RSS_GROWTH):
        gc.collect()  # fx graphs hold their models in reference cycles
        if _LIBC is not None:
            _LIBC.malloc_trim(0)
        _after_trim[0] = _rss_bytes()


@pytest.fixture(autouse=True, scope="module")
def _zoo_cache_dropped_after_its_module(request: pytest.FixtureRequest) -> Iterator[None]:
    """A zoo module's ``_CACHE`` (its models and reports, shared by its tests) is emptied once its last test ran:
    smp's 15 models and open_clip's two held 0.6 and 0.5 GiB for the rest of the session."""
    yield
    if request.node.path.name.startswith("test_zoo_"):
        request.module._CACHE.clear()


_RSS_TRIM = 3 * 2**29  # a full collection costs up to a second late in the run: only above this,
_RSS_GROWTH = 2**29  # and only once the memory has grown by this much since the last one (what the tests keep stays)
_after_trim = [0]


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096
    except OSError:  # not Linux
        return 0


@pytest.fixture(autouse=True)
def _search_bounded_by_its_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """The input-size search of a graph traced for its shapes only stops after ``RETRACE_SECONDS`` of the
    thread's CPU time (a bound on the user's wait) or ``MAX_RETRACES`` traces.  Tests check what the search names,
    which a slow machine's CPU time would cut short; here only the count bounds it, so a run gives the same
    answers on any machine."""
    import torchsurgeon.inputsize

    monkeypatch.setattr(torchsurgeon.inputsize, "RETRACE_SECONDS", 3600.0)
