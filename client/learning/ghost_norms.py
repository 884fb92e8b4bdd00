"""Per-example gradient norms of embeddings for Opacus' ghost clipping, without ``torch.unique``.

Opacus computes an embedding's per-example gradient norm by pairing every
(example, token id), running ``torch.unique(..., dim=0)`` over the pairs and
summing gradients per pair: exact, but the sort behind it was 60% of a DP-SGD
round's time here. For a window of K positions the same norm is a K x K product:

    ||dW_i||^2 = sum over positions s, t with id_s == id_t of <g_s, g_t>

(the gradient of row v is the sum of the output gradients at the positions that
read v). With K <= 64 that is a few small batched matrix products, exact to
rounding, and the norms, hence the clipping and the privacy guarantee, are the
same. When the table is small (rows x dim no more than twice K x K, as for the gap
buckets) each example's gradient itself, scattered into its own copy of the table,
is cheaper than the products of tiny matrices; with K = 1 the norm is the output
gradient's. All three are exact. Registering it replaces Opacus' sampler for
``nn.Embedding`` in this process; ``client.learning.clipped_gradients`` calls it directly.
"""

from __future__ import annotations

import torch
from opacus.grad_sample.utils import register_norm_sampler
from torch import nn


def embedding_norm_sample(
    layer: nn.Embedding, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    """Each example's gradient norm for ``layer.weight`` (Opacus' norm-sampler contract)."""
    squared = embedding_squared_norms(layer, activations[0], backprops)
    return {layer.weight: squared.sqrt()}  # type: ignore[dict-item]


def embedding_squared_norms(
    layer: nn.Embedding, ids: torch.Tensor, backprops: torch.Tensor
) -> torch.Tensor:
    """Each example's squared gradient norm for ``layer.weight``, from its ids and backprops."""
    ids = ids.reshape(ids.shape[0], -1)
    batch, window = ids.shape
    grads = backprops.reshape(batch, window, -1)
    if layer.padding_idx is not None:  # the padding row receives no gradient
        grads = grads * (ids != layer.padding_idx).unsqueeze(-1).to(grads.dtype)
    rows, dim = layer.weight.shape
    if window == 1:  # one row read: its gradient is the output's
        return (grads * grads).sum(dim=(1, 2))
    if rows * dim <= 2 * window * window:  # small table: each example's own gradient
        slots = (torch.arange(batch).unsqueeze(1) * rows + ids).reshape(-1)
        own = torch.zeros(batch * rows, dim, dtype=grads.dtype)
        own.index_add_(0, slots, grads.reshape(-1, dim))
        own = own.view(batch, -1)
        return (own * own).sum(dim=1)
    same = ids.unsqueeze(2) == ids.unsqueeze(1)
    squared = torch.where(same, torch.bmm(grads, grads.transpose(1, 2)), 0.0).sum(dim=(1, 2))
    return squared.clamp(min=0)


register_norm_sampler(nn.Embedding)(embedding_norm_sample)
