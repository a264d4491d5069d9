"""The caller's torch state no answer depends on, set aside while a public function runs.

Users call torchsurgeon where their own code runs: inside ``with torch.device("meta"):``, where
they build a model too large for their memory, or after ``torch.set_default_device("meta")``.
The answers are those of a plain context, and the caller's state is back as it was on return.
:func:`plain_torch` sets aside, for the length of a call:

* the torch function modes: a default device (``with torch.device(...)``,
  ``torch.set_default_device``: a tensor the analysis makes without naming a device would be made
  there, a new head on ``meta`` for a model on the CPU) and a user's ``TorchFunctionMode``;
* the dispatch modes: a ``FakeTensorMode`` (whose tensors the analysis's own fake and meta tensors
  cannot mix with), a ``FlopCounterMode`` (which would count the analysis's operations as the
  user's, and keep its tensors alive) and a user's ``TorchDispatchMode``;
* anomaly detection (``torch.autograd.set_detect_anomaly(True)``), whose check of every gradient for
  NaN reads the values :func:`~torchsurgeon.memory_plan`'s fake step has none of.  It is a setting of
  the process: it is off while any thread is inside a public function, and back on when the last
  returns (other threads' backward passes go unchecked for that time);
* the global module hooks (``torch.nn.modules.module.register_module_forward_hook`` & co, which a
  ``FlopCounterMode``'s module tracker registers: they held the fake step's tensors, and
  ``max_batch`` of a BERT gave 14754 for 15245), set aside and put back the same way.

Kept, because the answer is of the step the caller will run: the default dtype (a ``float64``
default makes Adam's step counters ``float64``, which :func:`~torchsurgeon.memory_plan` plans),
grad and inference mode (each analysis sets what it needs).

Examples
--------
>>> import torch
>>> with torch.device("meta"):
...     with plain_torch():
...         torch.empty(2).device
...     torch.empty(2).device
device(type='cpu')
device(type='meta')
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, ParamSpec, TypeVar

import torch
from torch.utils._python_dispatch import _disable_current_modes

__all__ = ("SetAside", "in_plain_torch", "plain_torch")

_P = ParamSpec("_P")
_R = TypeVar("_R")
_S = TypeVar("_S")


_GLOBAL_HOOKS = tuple(
    getattr(torch.nn.modules.module, f"_global_{kind}")
    for kind in (
        "forward_pre_hooks",
        "forward_hooks",
        "forward_hooks_always_called",
        "forward_hooks_with_kwargs",
        "backward_pre_hooks",
        "backward_hooks",
    )
)
"""The dicts of ``torch.nn.modules.module.register_module_forward_hook`` & co: a handle removes its hook from the
dict itself, so they are emptied and filled again, never replaced."""


class SetAside(Generic[_S]):
    """A process-wide setting set aside while any thread is inside :meth:`held` (re-entrant, thread-safe): ``off``
    runs when the first caller enters and returns what ``restore`` puts back when the last one leaves.

    Examples
    --------
    >>> state = {"on": True}
    >>> aside = SetAside(lambda: state.update(on=False) or True, lambda was: state.update(on=was))
    >>> with aside.held():
    ...     with aside.held():  # a call inside another
    ...         state["on"]
    False
    >>> state["on"]
    True
    """

    def __init__(self, off: Callable[[], _S], restore: Callable[[_S], None]) -> None:
        self._off, self._restore = off, restore
        self._lock = threading.Lock()
        self._depth = 0
        self._saved: _S | None = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """The setting aside in this block, put back when the last caller leaves."""
        with self._lock:
            if self._depth == 0:
                self._saved = self._off()
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    saved, self._saved = self._saved, None
                    self._restore(saved)  # type: ignore[arg-type]


_Saved = tuple[tuple[bool, bool] | None, list[dict[int, Any]]]
"""Anomaly detection's (enabled, check_nan) when it was on, and the global module hooks, set aside."""


def _process_wide_off() -> _Saved:
    """Anomaly detection off, the global module hooks (a FlopCounterMode's module tracker: they would hold the fake
    step's tensors) emptied; what they were."""
    was = (True, torch.is_anomaly_check_nan_enabled()) if torch.is_anomaly_enabled() else None
    if was is not None:
        torch.set_anomaly_enabled(False)
    hooks = [dict(h) for h in _GLOBAL_HOOKS]
    for h in _GLOBAL_HOOKS:
        h.clear()
    return was, hooks


def _process_wide_back(saved: _Saved) -> None:
    was, hooks = saved
    if was is not None:
        torch.set_anomaly_enabled(*was)
    for current, before in zip(_GLOBAL_HOOKS, hooks, strict=True):
        added = dict(current)  # registered meanwhile: after the caller's, as if registered after them
        current.clear()
        current.update(before)
        current.update(added)


_PROCESS_WIDE = SetAside(_process_wide_off, _process_wide_back)


@contextlib.contextmanager
def plain_torch() -> Iterator[None]:
    """Set the caller's torch function modes aside in this block and put them back after, in their order
    (module docstring)."""
    modes = [torch._C._pop_torch_function_stack() for _ in range(torch._C._len_torch_function_stack())]
    try:
        with _disable_current_modes(), _PROCESS_WIDE.held():  # the dispatch modes, pushed back on exit
            yield
    finally:
        for mode in reversed(modes):  # popped innermost first: the outermost goes back first
            torch._C._push_on_torch_function_stack(mode)


def in_plain_torch(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """``fn`` run inside :func:`plain_torch`: the decorator of the public functions.

    Examples
    --------
    >>> import torch
    >>> @in_plain_torch
    ... def device() -> torch.device:
    ...     return torch.empty(1).device
    >>> with torch.device("meta"):
    ...     device()
    device(type='cpu')
    """

    @functools.wraps(fn)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        __tracebackhide__ = True  # a failed assert_contract shows the test's line in pytest, as without the wrapper
        with plain_torch():
            return fn(*args, **kwargs)

    return call
