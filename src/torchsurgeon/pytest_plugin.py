"""pytest plugin (entry point ``pytest11``): shape-contract marker and fixture.

Registered as soon as torchsurgeon is installed; it imports only the public API.
"""

from __future__ import annotations

__all__ = ()
