"""Thread safety: torch.fx patches ``nn.Module.__call__`` and ``__getattr__`` for the whole process
while it traces, so concurrent analyses must give the serial answers and leave other threads' real
forwards alone (docs/threads.md)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
import torch
import torchvision
from torch import nn

from models import CifarNet
from torchsurgeon import ModelReport, adapt_input_channels, check_surgery, paramcount

pytestmark = pytest.mark.slow

T = TypeVar("T")
THREADS = 8
ORIGINAL_CALL = nn.Module.__call__
ORIGINAL_GETATTR = nn.Module.__getattr__


@pytest.fixture(scope="module")
def zoo() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "resnet18": torchvision.models.resnet18(weights=None),
        "mobilenet_v3_small": torchvision.models.mobilenet_v3_small(weights=None),
    }


def _in_threads(fn: Callable[[Any], T], jobs: Sequence[Any], rounds: int = 2) -> list[T]:
    """``fn`` on every job from ``THREADS`` threads; each thread runs every job ``rounds`` times, in a
    rotated order so that different jobs overlap, all threads starting each step together.  Results
    sorted by job; the first exception a thread raised is raised again."""
    step = threading.Barrier(THREADS, timeout=30)

    def worker(shift: int) -> list[tuple[int, T]]:
        done: list[tuple[int, T]] = []
        for i in [(i + shift) % len(jobs) for i in range(len(jobs))] * rounds:
            step.wait()
            try:
                done.append((i, fn(jobs[i])))
            except BaseException:
                step.abort()  # the other threads stop at their next step instead of waiting for this one
                raise
        return done

    with ThreadPoolExecutor(THREADS) as pool:
        futures = [pool.submit(worker, shift) for shift in range(THREADS)]
    errors = [e for f in futures if (e := f.exception()) and not isinstance(e, threading.BrokenBarrierError)]
    if errors:
        raise errors[0]
    done = [pair for f in futures for pair in f.result()]
    assert nn.Module.__call__ is ORIGINAL_CALL, "nn.Module.__call__ left patched by torch.fx"
    assert nn.Module.__getattr__ is ORIGINAL_GETATTR, "nn.Module.__getattr__ left patched by torch.fx"
    return [result for _, result in sorted(done, key=lambda pair: pair[0])]


def _summary(report: ModelReport) -> tuple[Any, ...]:
    messages = tuple(f.message for f in report.findings)
    return report.total, report.total_for_input, report.output_shape, messages, str(report)


def test_concurrent_paramcount_equals_serial(zoo: dict[str, nn.Module]) -> None:
    jobs = [(name, shape) for name in zoo for shape in ((1, 224, 224), (3, 64, 64))]
    serial = {job: _summary(paramcount(zoo[job[0]], job[1])) for job in jobs}
    limit = sys.getrecursionlimit()

    results = _in_threads(lambda job: (job, _summary(paramcount(zoo[job[0]], job[1]))), jobs)

    assert len(results) == THREADS * 2 * len(jobs)
    for job, summary in results:
        assert summary == serial[job], job
    assert serial[("resnet18", (1, 224, 224))][3] == (
        "conv1 (Conv2d) expects in_channels=3, got 1 — fold it with adapt_input_channels(model, 1)",
    )
    assert sys.getrecursionlimit() == limit


def test_concurrent_check_surgery_equals_serial(zoo: dict[str, nn.Module]) -> None:
    by_hand = torchvision.models.resnet18(weights=None)
    by_hand.load_state_dict(zoo["resnet18"].state_dict())
    by_hand.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)  # re-initialised: the report says so
    pairs = {
        "resnet18 folded": (zoo["resnet18"], adapt_input_channels(zoo["resnet18"], 1).model),
        "resnet18 by hand": (zoo["resnet18"], by_hand),
        "mobilenet folded": (zoo["mobilenet_v3_small"], adapt_input_channels(zoo["mobilenet_v3_small"], 1).model),
    }

    def summary(name: str) -> tuple[str, str, str, list[tuple[str, str]]]:
        rep = check_surgery(*pairs[name], (1, 64, 64))
        return name, rep.verdict, str(rep), [(p.name, str(p.status)) for p in rep.params]

    serial = {name: summary(name) for name in pairs}
    assert "re-initialised" in serial["resnet18 by hand"][1]

    for result in _in_threads(summary, list(pairs), rounds=1):
        assert result == serial[result[0]]


def test_concurrent_adapt_input_channels_equals_serial(zoo: dict[str, nn.Module]) -> None:
    jobs = [("resnet18", 1, "sum"), ("mobilenet_v3_small", 1, "sum"), ("mobilenet_v3_small", 4, "zero_extra")]

    def adapt(job: tuple[str, int, str]) -> tuple[tuple[str, int, str], str, dict[str, torch.Tensor]]:
        result = adapt_input_channels(zoo[job[0]], job[1], job[2])
        return job, str(result), result.model.state_dict()

    serial = {job: adapt(job) for job in jobs}

    for job, table, state in _in_threads(adapt, jobs, rounds=1):
        assert table == serial[job][1]
        want = serial[job][2]
        assert state.keys() == want.keys()
        assert all(torch.equal(state[k], want[k]) for k in want), job


class _Rendezvous(nn.Module):
    """Holds the trace in the middle of ``forward`` (torch.fx's patches in place) while the other thread runs."""

    def __init__(self, meet: threading.Barrier) -> None:
        super().__init__()
        self.meet = meet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.meet.wait()  # the other thread may start its forwards
        self.meet.wait()  # the other thread has finished them
        return x


class _Traced(nn.Module):
    def __init__(self, meet: threading.Barrier) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
        self.pause = _Rendezvous(meet)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pause(self.body(x)))


def test_real_forward_in_another_thread_during_traces() -> None:
    """Another model, and a submodule of the model being traced (its parameters are the traced root's),
    run for real in a second thread while the first is inside torch.fx's trace: right outputs, hooks run."""
    rounds = 5
    meet = threading.Barrier(2, timeout=30)
    traced = _Traced(meet).eval()
    other = CifarNet().eval()
    hook_calls: list[int] = []
    other.fc3.register_forward_hook(lambda *_: hook_calls.append(1))
    x, y = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        want_other, want_body = other(x), traced.body(y)
    hook_calls.clear()
    errors: list[BaseException] = []
    outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forwards() -> None:
        for _ in range(rounds):
            meet.wait()
            try:
                for _ in range(3):
                    with torch.no_grad():
                        outputs.append((other(x), traced.body(y)))
            except BaseException as exc:
                errors.append(exc)
            finally:
                meet.wait()

    second = threading.Thread(target=forwards)
    second.start()
    try:
        reports = [paramcount(traced, (3, 16, 16)) for _ in range(rounds)]
    finally:
        second.join(timeout=60)

    assert not errors, f"{type(errors[0]).__name__}: {errors[0]}"
    assert len(outputs) == 3 * rounds and len(hook_calls) == 3 * rounds
    for got_other, got_body in outputs:
        assert type(got_other) is torch.Tensor and torch.equal(got_other, want_other)
        assert type(got_body) is torch.Tensor and torch.equal(got_body, want_body)
    assert {r.output_shape for r in reports} == {(1, 2)}
    assert {r.total for r in reports} == {sum(p.numel() for p in traced.parameters())}
    assert nn.Module.__call__ is ORIGINAL_CALL and nn.Module.__getattr__ is ORIGINAL_GETATTR


class _InstallsHooks(nn.Module):
    """As transformers' output capturing: the first forward installs a forward hook on a layer and marks the model
    with a flag; what the hook stores is what ``forward`` returns.  ``hold`` runs in the middle of ``forward``."""

    def __init__(self, hold: Callable[[], None]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.hold = hold
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not getattr(self, "_hooks_installed", False):
            self.conv.register_forward_hook(lambda _m, _a, out: self.seen.append(out))
            self._hooks_installed = True
        self.seen.clear()
        self.conv(x)
        self.hold()
        return self.seen[-1].mean(dim=(2, 3))


def _held_once() -> tuple[threading.Event, Callable[[], None]]:
    """An event set by the first call of ``hold``, which then sleeps 0.3 s: the first trace stays inside ``forward``
    while the other thread starts; later calls return at once."""
    started = threading.Event()

    def hold() -> None:
        if not started.is_set():
            started.set()
            time.sleep(0.3)

    return started, hold


def test_a_trace_never_records_what_another_threads_trace_set_on_the_model() -> None:
    """A second thread's paramcount starting while the first is tracing the same model: the first trace's hook and
    flag are not taken for the model's own (before the fix, the second trace put the flag back without the hook:
    every later forward and analysis lost the hook's output)."""
    started, hold = _held_once()
    model = _InstallsHooks(hold).eval()
    serial = _summary(paramcount(_InstallsHooks(lambda: None).eval(), (3, 8, 8)))
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(lambda: _summary(paramcount(model, (3, 8, 8))))
        started.wait(timeout=30)
        second = _summary(paramcount(model, (3, 8, 8)))
        assert first.result() == second == serial
    assert serial[2] == (1, 4)
    assert "_hooks_installed" not in vars(model) and not model.conv._forward_hooks  # as built
    assert _summary(paramcount(model, (3, 8, 8))) == serial
    with torch.no_grad():
        assert model(torch.randn(2, 3, 8, 8)).shape == (2, 4)  # the first forward installs its hook


def test_a_copy_never_takes_what_another_threads_trace_set_on_the_model() -> None:
    """adapt_input_channels copies the model: during another thread's trace of it, the copy waits for the trace to
    put the model back (before the fix, it copied the trace's hook and flag, and the edited model failed)."""
    started, hold = _held_once()
    model = _InstallsHooks(hold).eval()
    with ThreadPoolExecutor(1) as pool:
        traced = pool.submit(lambda: paramcount(model, (3, 8, 8)))
        started.wait(timeout=30)
        edited = adapt_input_channels(model, 1).model
        assert traced.result().output_shape == (1, 4)
    assert "_hooks_installed" not in vars(edited) and not edited.conv._forward_hooks
    with torch.no_grad():
        assert edited(torch.randn(2, 1, 8, 8)).shape == (2, 4)
