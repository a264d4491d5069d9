"""Calls a ``forward`` makes for their side effects alone, which a trace skips: a LightningModule's logging.

Users log from ``forward`` (``self.log("feat_norm", f.norm())``,
``self.log_dict({...})``).  Lightning records the value in the Trainer's
loop and returns None; outside a Trainer it warns and returns None.  Either
way nothing the forward computes depends on the call.  In a trace, though,
Lightning checks the value it is given (a ``Tensor``, a number or a
``Metric``), which a traced value is not, and raises.

:func:`quiet` gives the ``self`` a trace calls ``forward`` with: a stand-in
sharing the module's ``__dict__`` (every attribute, submodule and parameter
is the module's own, and what forward sets on ``self`` is set on the module,
as in a real forward), of a subclass whose logging methods return None.
Nothing is patched: the module, its class and Lightning are left as they
are, so another thread's forward (of this model too) logs as it does
without torchsurgeon.  A class that defines its own ``log`` keeps it.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from torch import nn

__all__ = ("quiet",)

_LOGGING: dict[tuple[str, str], tuple[str, ...]] = {
    ("lightning.pytorch.core.module", "LightningModule"): ("log", "log_dict"),
    ("pytorch_lightning.core.module", "LightningModule"): ("log", "log_dict"),
}
"""Per class (module, name): its methods called for their side effects only, returning None."""

_QUIET: weakref.WeakKeyDictionary[type, type | None] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _skipped(self: Any, *args: Any, **kwargs: Any) -> None:
    """What a logging call gives a trace: nothing (Lightning's ``log`` returns None)."""


def _quiet_class(cls: type) -> type | None:
    """A subclass of ``cls`` whose logging methods (:data:`_LOGGING`) return None, named as ``cls``; None when
    ``cls`` has none, or has overridden them all."""
    with _LOCK:
        if cls in _QUIET:
            return _QUIET[cls]
        skipped: dict[str, Any] = {}
        for owner in cls.__mro__:
            for name in _LOGGING.get((owner.__module__, owner.__name__), ()):
                if getattr(cls, name, None) is vars(owner).get(name):  # the library's own, not the user's
                    skipped[name] = _skipped
        made = None
        if skipped:
            made = type(
                cls.__name__, (cls,), {**skipped, "__module__": cls.__module__, "__qualname__": cls.__qualname__}
            )
        _QUIET[cls] = made
        return made


def quiet(module: nn.Module) -> nn.Module:
    """``module``, or the stand-in its ``forward`` is traced with when its class logs (module docstring).

    Examples
    --------
    >>> from torch import nn
    >>> layer = nn.Linear(2, 2)
    >>> quiet(layer) is layer
    True
    """
    made = _quiet_class(type(module))
    if made is None:
        return module
    stand_in: nn.Module = object.__new__(made)
    object.__setattr__(stand_in, "__dict__", module.__dict__)  # shared: the module's state, read and written
    return stand_in
