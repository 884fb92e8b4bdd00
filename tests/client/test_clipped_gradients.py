"""The one-pass clipped sum is exactly Opacus' ghost clipping's, and per-example gradients'."""

import pytest
import torch
from opacus.grad_sample.embedding import compute_embedding_norm_sample
from opacus.grad_sample.grad_sample_module_fast_gradient_clipping import (
    GradSampleModuleFastGradientClipping,
)
from opacus.optimizers import DPOptimizerFastGradientClipping
from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping
from torch import nn

from client.learning.clipped_gradients import ClippedGradients
from policy.model import ModelConfig, NextActionPolicy


class _Padded(nn.Module):
    """Embedding with a padding row, a bias-free Linear and a frozen one: the corner cases."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 3, padding_idx=0)
        self.mid = nn.Linear(12, 5, bias=False)
        self.frozen = nn.Linear(5, 5)
        self.frozen.requires_grad_(False)
        self.out = nn.Linear(5, 6)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.frozen(self.mid(self.emb(ids).flatten(1)))))


def _batch(n: int = 24) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    context = torch.randint(0, 6, (n, 8), generator=g)  # few ids: repeats within a window
    context[:, :2] = 0
    category = torch.randint(0, 4, (n,), generator=g)
    gaps = torch.randint(0, 15, (n, 8), generator=g)
    return (context, category, gaps), torch.randint(0, 20, (n,), generator=g)


def _ours(model: nn.Module, inputs: tuple[torch.Tensor, ...], target: torch.Tensor, clip: float):
    clipper = ClippedGradients(model, clip)
    losses = nn.functional.cross_entropy(model(*inputs), target, reduction="none")
    clipper.backward(losses)
    clipper.remove()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _per_example(model: nn.Module, inputs: tuple[torch.Tensor, ...], target: torch.Tensor, clip):
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    norms = []
    for i in range(len(target)):
        loss = nn.functional.cross_entropy(
            model(*(x[i : i + 1] for x in inputs)), target[i : i + 1]
        )
        grads = torch.autograd.grad(loss, list(params.values()))
        norm = float(torch.sqrt(sum((g**2).sum() for g in grads)))
        norms.append(norm)
        for name, g in zip(params, grads, strict=True):
            total[name] += min(1.0, clip / (norm + 1e-6)) * g
    return total, norms


@pytest.mark.filterwarnings("ignore:Full backward hook")
@pytest.mark.parametrize("clip", [0.3, 1e3])
def test_the_policys_clipped_sum_equals_opacus_ghost_clipping(clip, monkeypatch):
    # Opacus' own embedding norms, not the ones ghost_norms registers, as the reference.
    samplers = GradSampleModuleFastGradientClipping.NORM_SAMPLERS
    monkeypatch.setitem(samplers, nn.Embedding, compute_embedding_norm_sample)
    torch.manual_seed(0)
    inputs, target = _batch()
    model = NextActionPolicy(
        ModelConfig(tokens=tuple(f"t{i}" if i else "<pad>" for i in range(20)))
    )
    reference = NextActionPolicy(model.config)
    reference.load_state_dict(model.state_dict())
    got = _ours(model, inputs, target, clip)

    wrapped = GradSampleModuleFastGradientClipping(reference, max_grad_norm=clip)
    optimizer = DPOptimizerFastGradientClipping(
        torch.optim.SGD(reference.parameters(), lr=1.0),
        noise_multiplier=0.0,
        max_grad_norm=clip,
        expected_batch_size=len(target),
    )
    criterion = DPLossFastGradientClipping(wrapped, optimizer, nn.CrossEntropyLoss(), "mean")
    criterion(wrapped(*inputs), target).backward()
    want = dict(reference.named_parameters())
    norms = wrapped.per_sample_gradient_norms
    assert (norms > clip).any() if clip < 1 else (norms < clip).all()
    for name, grad in got.items():
        torch.testing.assert_close(grad, want[name].grad, atol=1e-5, rtol=1e-4, msg=name)


def test_padding_frozen_and_bias_free_layers_clip_like_per_example_gradients():
    torch.manual_seed(0)
    model = _Padded()
    ids = torch.randint(0, 10, (16, 4))
    ids[:, 0] = 0
    target = torch.randint(0, 6, (16,))
    want, norms = _per_example(model, (ids,), target, 0.2)
    assert min(norms) > 0.2
    got = _ours(model, (ids,), target, 0.2)
    assert set(got) == {"emb.weight", "mid.weight", "out.weight", "out.bias"}
    assert model.frozen.weight.grad is None
    assert float(got["emb.weight"][0].abs().sum()) == 0.0  # the padding row learns nothing
    for name, grad in got.items():
        torch.testing.assert_close(grad, want[name], atol=1e-6, rtol=1e-5, msg=name)


def test_layers_it_cannot_clip_exactly_are_refused():
    with pytest.raises(ValueError, match="LayerNorm"):
        ClippedGradients(nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3)), 1.0)

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layer(self.layer(x))

    tied = Tied()
    clipper = ClippedGradients(tied, 1.0)
    with pytest.raises(ValueError, match="tied"):
        tied(torch.randn(2, 3))
    clipper.remove()
    sequence = nn.Linear(3, 2)
    clipper = ClippedGradients(sequence, 1.0)
    losses = sequence(torch.randn(4, 5, 3)).sum(dim=(1, 2))
    with pytest.raises(ValueError, match="batch, features"):
        clipper.backward(losses)
