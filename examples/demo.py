"""The resnet50 transfer-learning scenario, end to end (``make demo``).

1. How many parameters does resnet50 have, and what happens at 1 channel?
2. The same for the PyTorch CIFAR-10 tutorial net.
3. Edit resnet50 by hand (conv1 to 1 channel, an extra fc) and check the surgery.
4. Do it with torchsurgeon instead (fold conv1, append a head) and check again.
5. Will it fit? One fine-tuning step of the edited model on a 24 GiB GPU: fully trainable vs frozen backbone.
6. Prove the fold: the folded model on a grey image equals the original on the grey image replicated to RGB.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from torchsurgeon import adapt_input_channels, append_head, check_surgery, memory_plan, paramcount


class CifarNet(nn.Module):
    """The CNN of the PyTorch CIFAR-10 tutorial."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def section(title: str) -> None:
    print(f"\n{'=' * 100}\n{title}\n{'=' * 100}")


def main() -> None:
    torch.manual_seed(0)
    resnet = torchvision.models.resnet50()  # random weights stand in for the pretrained ones

    section("1. resnet50 at (3, 224, 224): totals")
    rgb = paramcount(resnet, (3, 224, 224))
    print("\n".join(f"{k}: {v}" for k, v in rgb.totals()))
    print("\n".join(rgb.notes()))

    section("   resnet50 at (1, 224, 224): every layer, conv1 flagged")
    grey = paramcount(resnet, (1, 224, 224))
    print(grey)

    section("2. CIFAR-10 tutorial net at 3 and 1 channels")
    net = CifarNet()
    print(paramcount(net, (3, 32, 32)))
    print()
    print(paramcount(net, (1, 32, 32)))

    section("3. resnet50 edited by hand: conv1 -> Conv2d(1, 64, 7, 2, 3), fc -> Sequential(fc, Linear(1000, 10))")
    by_hand = copy.deepcopy(resnet)
    by_hand.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    by_hand.fc = nn.Sequential(by_hand.fc, nn.Linear(1000, 10))
    print(check_surgery(resnet, by_hand, (1, 224, 224)))

    section("4. The same edit with torchsurgeon: fold conv1 (sum), append the head")
    folded = adapt_input_channels(resnet, 1, "sum")
    print(folded)
    edited = append_head(folded.model, nn.Linear(1000, 10)).model
    print()
    print(check_surgery(resnet, edited, (1, 224, 224)))

    section("5. Will it fit? One AdamW step of the edited model, bf16 autocast, batch 64, on a 24 GiB GPU")
    plan = memory_plan(edited, (1, 224, 224), batch=64, optimizer="adamw", amp="bf16")
    print("\n".join(f"{k}: {v}" for k, v in plan.totals()))
    print(f"Largest batch in 24 GiB: {plan.max_batch('24GiB')}")
    frozen = copy.deepcopy(edited).requires_grad_(False)
    frozen.fc[1].requires_grad_(True)  # train the new head only
    head_only = memory_plan(frozen, (1, 224, 224), batch=64, optimizer="adamw", amp="bf16")
    print(f"Backbone frozen, new head trained: peak {head_only.peak / 2**20:,.2f} MiB, ", end="")
    print(f"largest batch in 24 GiB: {head_only.max_batch('24GiB')}")
    print("\n".join(plan.notes()[1:]))

    section("6. Proof: folded model on grey == original model on grey replicated to RGB (eval, float64)")
    original = resnet.double().eval()
    grey_model = adapt_input_channels(original, 1).model
    g = torch.randn(2, 1, 224, 224, dtype=torch.float64)
    with torch.no_grad():
        diff = (grey_model(g) - original(g.expand(2, 3, 224, 224))).abs().max().item()
    print(f"max |folded(grey) - original(grey x3)| = {diff:.3e}")


if __name__ == "__main__":
    main()
