"""LoRA layers of :mod:`lora_audio.adapters`: the one-GEMM update, fusing without wrappers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from diffusers.models.modeling_utils import ModelMixin
from peft.tuners.lora import LoraLayer
from torch import nn

from lora_audio import adapters
from lora_audio.config import LoraSection
from lora_audio.models.base import with_peft_mixin


class TwoLayers(ModelMixin):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(24, 32)
        self.b = nn.Linear(32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, T, 24]`` -> ``[B, T, 16]``."""
        return self.b(torch.relu(self.a(x)))


def _net(lora: LoraSection) -> nn.Module:
    torch.manual_seed(0)
    net = with_peft_mixin(TwoLayers())
    adapters.add_lora(net, ["a", "b"], lora)
    with torch.no_grad():  # a non-zero update (B starts at zero)
        for name, p in net.named_parameters():
            if ".lora_B." in name:
                p.normal_(0.0, 0.5)
    return net


def _layers(net: nn.Module) -> list[LoraLayer]:
    return [m for m in net.modules() if isinstance(m, LoraLayer)]


def _plain_peft(net: nn.Module) -> None:
    for m in _layers(net):
        m.lora_variant.pop("default", None)


def _output_and_grads(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    net.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(True)
    y = net(x)
    y.square().sum().backward()
    grads = [p.grad for n, p in sorted(net.named_parameters()) if p.requires_grad]
    return [y.detach(), x.grad, *grads]


def test_one_gemm_update_matches_peft_outputs_and_gradients() -> None:
    lora = LoraSection(rank=4, alpha=12.3, dropout=0.0)  # scaling 3.075: not a power of two
    net = _net(lora)
    assert all(isinstance(m.lora_variant["default"], adapters._AddmmLora) for m in _layers(net))
    x = torch.randn(3, 5, 24, generator=torch.Generator().manual_seed(1))
    ours = _output_and_grads(net, x)
    _plain_peft(net)
    peft = _output_and_grads(net, x)
    assert len(ours) == 2 + 4  # output, input grad, A and B of both layers
    for a, b in zip(ours, peft, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))


def test_rank_dropout_still_acts_through_the_one_gemm_update() -> None:
    net = _net(LoraSection(rank=4, alpha=4, dropout=0.5, dropout_placement="rank"))
    x = torch.randn(2, 7, 24, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        net.eval()
        clean = net(x)
        net.train()
        dropped = net(x)
    assert float((dropped - clean).abs().max()) > 1e-3


def test_dora_keeps_its_own_variant() -> None:
    net = _net(LoraSection(rank=4, alpha=8, dropout=0.0, use_dora=True))
    assert not any(
        isinstance(v, adapters._AddmmLora) for m in _layers(net) for v in m.lora_variant.values()
    )


@pytest.mark.parametrize("safe", [False, True])
def test_merge_and_unmerge_of_one_gemm_layers(safe: bool) -> None:
    net = _net(LoraSection(rank=4, alpha=12.3, dropout=0.0)).eval()
    x = torch.randn(2, 3, 24, generator=torch.Generator().manual_seed(3))
    base = {n: t.clone() for n, t in adapters.base_state(net).items()}
    with torch.no_grad():
        unfused = net(x)
        for m in _layers(net):
            m.merge(safe_merge=safe)
        torch.testing.assert_close(net(x), unfused, rtol=1e-5, atol=1e-5)
        for m in _layers(net):
            m.unmerge()
        for name, t in adapters.base_state(net).items():
            torch.testing.assert_close(t, base[name], rtol=0, atol=1e-6)


def test_fused_runs_plain_layers_and_restores_the_model_exactly() -> None:
    net = _net(LoraSection(rank=4, alpha=12.3, dropout=0.0)).eval()
    model = SimpleNamespace(denoiser=net)
    x = torch.randn(2, 3, 24, generator=torch.Generator().manual_seed(4))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    wrappers = _layers(net)
    with torch.no_grad():
        unfused = net(x)
        with adapters.fused(model):
            assert not _layers(net)
            assert type(net.a) is nn.Linear and type(net.b) is nn.Linear
            torch.testing.assert_close(net(x), unfused, rtol=1e-5, atol=1e-5)
    assert _layers(net) == wrappers
    after = net.state_dict()
    assert after.keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(after[k], v), k
