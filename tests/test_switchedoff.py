"""Unused parameters that the model's own settings switch off are not a reason to doubt the trace.

The classes are defined here, at module level, because switched_off reads their source (as it reads a library's);
those reaching into them from outside are in switchedoff_outer.py.  Each lost-path case (``type(x) is
torch.Tensor`` is False for a proxy, silently) must still be caught.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models import assert_same_state, model_state
from switchedoff_outer import CallsTheHead, ReachedFromOutside
from torchsurgeon import paramcount
from torchsurgeon.records import Trust
from torchsurgeon.switchedoff import switched_off


class CrossBlock(nn.Module):
    """MONAI's TransformerBlock in small: a norm built always, used only ``if self.cross``."""

    def __init__(self, cross: bool) -> None:
        super().__init__()
        self.cross = cross
        self.norm = nn.LayerNorm(4)
        self.cross_norm = nn.LayerNorm(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cross and not self.training:
            x = x + self.cross_norm(x)
        return self.norm(x)

    def reset(self) -> None:  # never run by forward: a weight initialiser walking the submodules
        for m in self.modules():
            m.zero_grad()


class TypeGuarded(nn.Module):
    """Lost by the trace: ``type(x) is torch.Tensor`` is False for a proxy, True in a real forward."""

    def __init__(self) -> None:
        super().__init__()
        self.widen = nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if type(x) is torch.Tensor:
            x = self.widen(x)
        return x


class ByHelper(nn.Module):
    """The use is in a helper method ``forward`` calls: not read as guarded (doubtful, as before)."""

    def __init__(self) -> None:
        super().__init__()
        self.flag = False
        self.extra = nn.Linear(4, 4)

    def _extra(self, x: torch.Tensor) -> torch.Tensor:
        return self.extra(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._extra(x) if self.flag else x


def _scaled(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x * 2


class PassesItself(nn.Module):
    """Its forward gives ``self`` to a function (as transformers' attention functions take their module), which could
    reach any submodule: not read as switched off."""

    def __init__(self) -> None:
        super().__init__()
        self.flag = False
        self.extra = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flag:
            x = self.extra(x)
        return _scaled(self, x)


class WithHead(nn.Module):
    """A head its ``forward`` does not run, but ``forward_head`` does (timm's models)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.head = nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


class LateBlock(nn.Module):
    """Its setting skips ``late_norm``; a function of this file reaches it (``_late``)."""

    def __init__(self) -> None:
        super().__init__()
        self.flag = False
        self.late_norm = nn.LayerNorm(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.late_norm(x) if self.flag else x


def _late(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return block.late_norm(x)  # type: ignore[operator]


class CallsLate(nn.Module):
    """Runs ``_late`` on its block on a path the trace loses."""

    def __init__(self) -> None:
        super().__init__()
        self.block = LateBlock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(x)
        return _late(self.block, x) if type(x) is torch.Tensor else x


def test_a_branch_its_settings_skip_needs_no_crosscheck_and_is_still_reported() -> None:
    model = nn.Sequential(nn.Linear(4, 4), CrossBlock(cross=False)).eval()
    report = paramcount(model, (3, 4))
    assert report.unused == ("1.cross_norm.weight", "1.cross_norm.bias")  # still listed: unused by forward
    assert report.total == sum(p.numel() for p in model.parameters())
    assert report.crosscheck.trust == Trust.NOT_RUN
    assert report.crosscheck.reason == (
        "nothing doubtful in the traced graph (2 unused parameters switched off by the model's settings)"
    )
    assert paramcount(model, (3, 4), crosscheck="always").crosscheck.trust == Trust.VERIFIED  # and it was right


def test_settings_are_read_per_instance_and_per_mode() -> None:
    on, off = CrossBlock(cross=True).eval(), CrossBlock(cross=False).eval()
    names = ["cross_norm.weight", "cross_norm.bias"]
    assert switched_off(off, names) == tuple(names)
    assert switched_off(on, names) == ()  # the branch runs in eval mode: unused only if the trace lost it
    assert switched_off(on.train(), names) == tuple(names)  # ``not self.training`` skips it in training mode
    off.cross = torch.tensor(False)  # not a plain setting: a tensor's truth is not read
    assert switched_off(off, names) == ()


def test_a_branch_the_trace_loses_is_still_caught() -> None:
    model = TypeGuarded().eval()
    report = paramcount(model, (3, 4))
    assert report.crosscheck.reason == "2 unused parameters"
    assert report.crosscheck.trust == Trust.UNTRUSTED and report.trusted is False
    with torch.no_grad():
        assert report.crosscheck.real_output == tuple(model(torch.zeros(1, 3, 4)).shape) == (1, 3, 6)


def test_a_submodule_another_class_names_stays_doubtful() -> None:
    """The block's settings skip ``cross_norm``, but the outer forward calls it itself (on a path the trace loses):
    the cross-check runs (the output shape is the same here, so it verifies)."""
    report = paramcount(ReachedFromOutside(CrossBlock(cross=False)).eval(), (3, 4))
    assert report.unused == ("block.cross_norm.weight", "block.cross_norm.bias")
    assert report.crosscheck.reason == "2 unused parameters" and report.crosscheck.trust == Trust.VERIFIED


def test_a_module_given_away_or_iterated_stays_doubtful() -> None:
    assert switched_off(PassesItself(), ["extra.weight"]) == ()
    assert switched_off(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)), ["1.weight"]) == ()  # runs its modules


def test_a_method_forward_does_not_run_is_still_doubtful_when_another_module_calls_it() -> None:
    assert switched_off(WithHead(), ["head.weight"]) == ("head.weight",)  # alone: nothing runs its head
    model = CallsTheHead(WithHead()).eval()
    report = paramcount(model, (3, 4))
    assert report.unused == ("net.head.weight", "net.head.bias")
    assert report.crosscheck.reason == "2 unused parameters" and report.crosscheck.trust == Trust.UNTRUSTED
    with torch.no_grad():
        assert report.crosscheck.real_output == tuple(model(torch.zeros(1, 3, 4)).shape) == (1, 3, 6)


def test_torchvision_googlenet_aux_heads_are_switched_off_in_eval_mode() -> None:
    """``if self.aux1 is not None: if self.training: aux1 = self.aux1(x)``, in ``_forward``, which ``forward``
    calls: unused in eval mode, by the model's own setting; used in training mode."""
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False).eval()
    before = model_state(model)
    report = paramcount(model, (3, 224, 224))
    assert_same_state(before, model_state(model))  # its source read, the model left as found
    assert len(report.unused) == 14 and report.crosscheck.trust == Trust.NOT_RUN
    assert paramcount(model, (3, 224, 224), crosscheck="always").crosscheck.trust == Trust.VERIFIED
    assert paramcount(model.train(), (3, 224, 224), batch=2).unused == ()


def test_a_submodule_a_function_of_its_file_reaches_stays_doubtful() -> None:
    """transformers' attention functions take their module: a function in the file that reads ``x.late_norm``."""
    assert switched_off(LateBlock(), ["late_norm.weight"]) == ()
    report = paramcount(CallsLate().eval(), (3, 4))
    assert report.crosscheck.reason == "2 unused parameters" and report.crosscheck.trust == Trust.VERIFIED


def test_a_use_in_a_helper_method_stays_doubtful() -> None:
    report = paramcount(ByHelper().eval(), (3, 4))
    assert report.unused == ("extra.weight", "extra.bias")
    assert report.crosscheck.trust == Trust.VERIFIED and report.crosscheck.reason == "2 unused parameters"


def test_monai_unetr_needs_no_crosscheck_for_its_cross_attention_norms() -> None:
    """UNETR's transformer blocks build ``norm_cross_attn`` and skip it (``with_cross_attention=False``): its
    cross-check (a meta copy and a forward, about 25 of its 80 ms) does not run; the numbers are exact."""
    nets = pytest.importorskip("monai.networks.nets")
    model = nets.UNETR(3, 2, (32, 32), feature_size=8, hidden_size=32, mlp_dim=64, num_heads=2, spatial_dims=2).eval()
    report = paramcount(model, (3, 32, 32))
    assert len(report.unused) == 24 and all(".norm_cross_attn." in name for name in report.unused)
    assert report.crosscheck.trust == Trust.NOT_RUN
    assert report.total == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        assert report.output_shape == tuple(model(torch.zeros(1, 3, 32, 32)).shape)
