"""torchsurgeon: parameters, shapes and surgery checks for transfer learning.

>>> from torch import nn
>>> from torchsurgeon import paramcount
>>> paramcount(nn.Linear(4, 2), (4,)).total
10

The public names are written once, in ``__init__.pyi``: type checkers read it,
and this module reads it at import (:mod:`torchsurgeon._lazy`).  They are
imported on first use (PEP 562), so ``import torchsurgeon`` and the pytest
plugin, which pytest loads in every run, do not import torch until something
is analysed.  The tracer is :func:`torchsurgeon.trace.trace`.
"""

from __future__ import annotations

from ._lazy import attach_stub

__version__ = "0.1.0"

_LAZY, __getattr__, __dir__ = attach_stub(__name__, __file__)

__all__ = ("__version__", *_LAZY)
