"""The next-action policy: reads the last K actions and the app in front.

An embedding per position, concatenated, then a small MLP. No recurrence and no
wide layers: Opacus computes per-sample gradients of embeddings and narrow
linear layers cheaply, while its DPGRU and wide linear layers made DP-SGD many
times slower than plain training.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from policy.vocabulary import NUM_CATEGORIES, VOCAB_SIZE


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the policy; client and server must agree on it."""

    context_length: int = 8
    token_dim: int = 16
    category_dim: int = 8
    hidden: int = 64
    vocab_size: int = VOCAB_SIZE
    num_categories: int = NUM_CATEGORIES


class NextActionPolicy(nn.Module):
    """Predicts logits over the action vocabulary."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        c = self.config
        self.tokens = nn.Embedding(c.vocab_size, c.token_dim)
        self.category = nn.Embedding(c.num_categories, c.category_dim)
        self.hidden = nn.Linear(c.context_length * c.token_dim + c.category_dim, c.hidden)
        self.out = nn.Linear(c.hidden, c.vocab_size)

    def forward(self, context: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        """Map (batch, K) token ids and (batch,) category ids to (batch, vocab) logits."""
        tokens = self.tokens(context).flatten(1)
        features = torch.cat([tokens, self.category(category)], dim=1)
        return self.out(torch.relu(self.hidden(features)))  # type: ignore[no-any-return]


def parameter_names(model: nn.Module) -> list[str]:
    """The ordered names of the arrays a client may send: the global model's parameters."""
    return [name for name, _ in model.named_parameters()]


def get_arrays(model: nn.Module) -> OrderedDict[str, NDArray[np.float32]]:
    """Copy the model's parameters out as named float32 arrays."""
    return OrderedDict(
        (name, p.detach().cpu().numpy().astype(np.float32, copy=True))
        for name, p in model.named_parameters()
    )


def set_arrays(model: nn.Module, arrays: list[NDArray[np.float32]]) -> None:
    """Load parameters in ``parameter_names`` order, checking every shape."""
    params = list(model.named_parameters())
    if len(arrays) != len(params):
        raise ValueError(f"expected {len(params)} arrays, got {len(arrays)}")
    with torch.no_grad():
        for (name, param), array in zip(params, arrays, strict=True):
            if tuple(array.shape) != tuple(param.shape):
                raise ValueError(f"array {name} has shape {array.shape}, expected {param.shape}")
            param.copy_(torch.from_numpy(np.asarray(array, dtype=np.float32)))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
