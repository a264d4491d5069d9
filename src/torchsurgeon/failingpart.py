"""Where an edited model fails, when its input layers were adapted and it no longer runs: the part that runs alone.

:func:`torchsurgeon.adapt_input_channels` tries its edit on a weightless copy
before touching the model.  When that copy fails after the adapted layers (a
decoder rebuilding three-channel patches, transformers' ``ViTMAEForPreTraining``)
the fix is to adapt the outermost part holding them that runs alone; when it
fails before them (a normalisation with one mean per RGB channel), adapting
that part helps nothing, and the message says what to change instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .readers import input_readers
from .records import FoldMode
from .shapes import meta_copy
from .shapespec import InputSpec

__all__ = ("part_that_runs", "reached")


def part_that_runs(trial: nn.Module, names: Sequence[str], channels: int, mode: FoldMode, image: InputSpec) -> str:
    """Where the edited ``trial`` fails after its adapted ``names`` (a decoder rebuilding 3-channel patches, as
    transformers' ``ViTMAEForPreTraining``): the outermost submodule holding them all that runs on ``image`` alone,
    as the call that adapts it on its own; empty when there is none."""
    parts = names[0].split(".")
    for depth in range(1, len(parts)):
        prefix = ".".join(parts[:depth])
        if not all(n.startswith(f"{prefix}.") for n in names):
            break
        try:
            input_readers(trial.get_submodule(prefix), image)
        except Exception:  # another signature, or it fails too: look deeper
            continue
        if not reached(trial, prefix, image):  # what fails comes before it: adapting it alone helps nothing
            return (
                f"; what fails comes before {prefix}, which runs on {channels} channel{'s' * (channels != 1)} alone "
                "(a normalisation with one mean per channel, as kornia's Normalize): change that step, or take it out "
                "of the model (fold_input_normalization puts a normalisation into the stem) before adapting"
            )
        given = "" if mode == FoldMode.SUM else f", mode={mode.value!r}"
        return (
            f"; what comes after {prefix} still expects the old channels (a decoder rebuilding them), while {prefix} "
            f"runs on {channels} channel{'s' * (channels != 1)} alone: adapt it on its own, "
            f"adapt_input_channels(model.get_submodule({prefix!r}), {channels}{given}).model"
        )
    return ""


class _Reached(Exception):
    """Raised by the stand-in :func:`reached` puts in place of a part: the run got that far."""


class _StandIn(nn.Module):
    def forward(self, *args: object, **kwargs: object) -> None:
        raise _Reached


def reached(trial: nn.Module, part: str, image: InputSpec) -> bool:
    """Whether a run of the weightless ``trial`` on ``image`` gets as far as its submodule ``part`` (what comes
    before it runs on that input), found with a copy whose ``part`` is a stand-in that stops the run.

    Not :func:`~torchsurgeon.copies.inputs_reaching`, which runs given tensors on a copy with hooks: this has an
    input spec, and :func:`~torchsurgeon.readers.input_readers` makes its tensors and, where the model's Python
    reads tensor values (``meta`` cannot answer), runs a small model on zeros on the CPU instead, a case a meta run
    with hooks would take for "not reached".  A run that ends without the part counts as reached too (what fails
    does not come before it), where ``inputs_reaching`` leaves the part out."""
    stopped = meta_copy(trial)
    stopped.set_submodule(part, _StandIn())
    try:
        input_readers(stopped, image)
    except Exception as exc:
        seen: BaseException | None = exc
        while seen is not None:
            if isinstance(seen, _Reached):
                return True
            seen = seen.__cause__ or seen.__context__
        return False
    return True
