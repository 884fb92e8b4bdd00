"""The next-action policy: reads the last K actions, the gaps between them and the app in front.

An embedding per position (the action's, and its gap bucket's), concatenated,
then a small MLP. No recurrence and no
wide layers: Opacus computes per-sample gradients of embeddings and narrow
linear layers cheaply, while its DPGRU and wide linear layers made DP-SGD many
times slower than plain training.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from policy.round_contract import DEFAULT_CONTEXT_LENGTH, DEFAULT_HIDDEN_WIDTH
from policy.vocabulary import CATEGORY_NAMES, NUM_GAP_BUCKETS, PAD, TOKENS

# Fields a configuration written before they existed lacks, with the value that
# reproduces the model it describes (no gap embedding, hidden width 64), not today's default.
LEGACY_DEFAULTS: dict[str, Any] = {"gap_dim": 0, "gap_buckets": NUM_GAP_BUCKETS, "hidden": 64}


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the policy and what its outputs mean; client and server must agree on it.

    The vocabulary (``tokens``, and the app ``categories`` it reads as context) is
    part of the configuration: one codebase trains the desktop-action policy and an
    event log's next-activity model, and a checkpoint is readable without the code
    that made it. Token 0 is always the padding token. ``gap_dim`` 0 means the
    model reads no times (checkpoints written before gaps existed).
    """

    context_length: int = DEFAULT_CONTEXT_LENGTH
    token_dim: int = 16
    category_dim: int = 8
    # The campaign's run config ``hidden-width`` (32: the company campaign; the demo's 64).
    hidden: int = DEFAULT_HIDDEN_WIDTH
    tokens: tuple[str, ...] = TOKENS
    categories: tuple[str, ...] = CATEGORY_NAMES
    gap_dim: int = 4
    gap_buckets: int = NUM_GAP_BUCKETS

    def __post_init__(self) -> None:
        if not self.tokens or self.tokens[0] != PAD:
            raise ValueError(f"a vocabulary starts with the padding token {PAD!r}")
        if len(set(self.tokens)) != len(self.tokens) or not self.categories:
            raise ValueError("a vocabulary needs distinct tokens and at least one category")
        if min(self.context_length, self.token_dim, self.category_dim, self.hidden) < 1:
            raise ValueError("model dimensions must be at least 1")
        if self.gap_dim < 0 or self.gap_buckets < 2:
            raise ValueError("gap_dim must be >= 0 and gap_buckets at least 2")

    @property
    def vocab_size(self) -> int:
        """Number of tokens the policy predicts over."""
        return len(self.tokens)

    @property
    def num_categories(self) -> int:
        """Number of app categories it reads as context."""
        return len(self.categories)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as written into every checkpoint and export."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in fields(self)
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Read ``to_dict``'s form back; unknown keys are an error, missing ones the defaults.

        A key added since (``LEGACY_DEFAULTS``) reads as the model written before it had one.
        """
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model configuration keys: {sorted(unknown)}")
        values: dict[str, Any] = {
            **LEGACY_DEFAULTS,
            **{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()},
        }
        return cls(**values)


class NextActionPolicy(nn.Module):
    """Predicts logits over the action vocabulary."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        c = self.config
        self.tokens = nn.Embedding(c.vocab_size, c.token_dim)
        self.category = nn.Embedding(c.num_categories, c.category_dim)
        # Registered only when used, so a gap-less checkpoint's parameters are unchanged.
        self.gap_embedding = nn.Embedding(c.gap_buckets, c.gap_dim) if c.gap_dim else None
        per_position = c.token_dim + c.gap_dim
        self.hidden = nn.Linear(c.context_length * per_position + c.category_dim, c.hidden)
        self.out = nn.Linear(c.hidden, c.vocab_size)

    def forward(
        self, context: torch.Tensor, category: torch.Tensor, gaps: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Map (batch, K) token ids, (batch,) category ids and (batch, K) gap buckets to logits.

        ``gaps`` None reads as every gap unknown (bucket 0); a model without a gap
        embedding ignores them.
        """
        features = [self.tokens(context).flatten(1), self.category(category)]
        if self.gap_embedding is not None:
            known = gaps if gaps is not None else torch.zeros_like(context)
            features.append(self.gap_embedding(known).flatten(1))
        return self.out(torch.relu(self.hidden(torch.cat(features, dim=1))))  # type: ignore[no-any-return]


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
