"""Multi-head self-attention with separate q/k/v/out projections, so whole heads can be removed.

``torch.nn.MultiheadAttention`` ties the projected width to ``embed_dim`` (``embed_dim ==
num_heads * head_dim``), so removing a head would also have to shrink the residual stream. The
pruner replaces it with this module, which computes the same function (verified by tests) and
keeps ``num_heads`` and ``head_dim`` independent of ``embed_dim``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiheadSelfAttention(nn.Module):
    """Self-attention: ``out_proj(softmax(q k^T / sqrt(head_dim)) v)`` over ``num_heads`` heads.

    Args:
        embed_dim: width of the input and output.
        num_heads: number of heads.
        head_dim: width of one head (default ``embed_dim // num_heads``).
        batch_first: input is ``[batch, seq, embed]`` (else ``[seq, batch, embed]``).
        bias: projections carry a bias.

    Example:
        >>> attn = MultiheadSelfAttention(64, 4)
        >>> attn(torch.randn(2, 10, 64)).shape
        torch.Size([2, 10, 64])
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        head_dim: int | None = None,
        batch_first: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if head_dim is None:
            if embed_dim % num_heads:
                raise ValueError(
                    f"MultiheadSelfAttention: embed_dim {embed_dim} is not a multiple of "
                    f"num_heads {num_heads}; pass head_dim"
                )
            head_dim = embed_dim // num_heads
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.batch_first = batch_first
        inner = num_heads * head_dim
        self.q_proj = nn.Linear(embed_dim, inner, bias=bias)
        self.k_proj = nn.Linear(embed_dim, inner, bias=bias)
        self.v_proj = nn.Linear(embed_dim, inner, bias=bias)
        self.out_proj = nn.Linear(inner, embed_dim, bias=bias)

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention) -> MultiheadSelfAttention:
        """Builds the equivalent module from a ``torch.nn.MultiheadAttention`` (self-attention)."""
        if not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError(
                "MultiheadSelfAttention.from_torch: only plain self-attention is supported "
                "(same q/k/v width, no bias_k/bias_v, no add_zero_attn)"
            )
        bias = mha.in_proj_bias is not None
        new = cls(mha.embed_dim, mha.num_heads, mha.head_dim, mha.batch_first, bias)
        e = mha.embed_dim
        dev, dt = mha.in_proj_weight.device, mha.in_proj_weight.dtype
        new.to(device=dev, dtype=dt)
        with torch.no_grad():
            for i, proj in enumerate((new.q_proj, new.k_proj, new.v_proj)):
                proj.weight.copy_(mha.in_proj_weight[i * e : (i + 1) * e])
                if bias:
                    proj.bias.copy_(mha.in_proj_bias[i * e : (i + 1) * e])
            new.out_proj.weight.copy_(mha.out_proj.weight)
            if bias:
                new.out_proj.bias.copy_(mha.out_proj.bias)
        new.train(mha.training)
        return new

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
    ):
        """Self-attention over ``query``; ``key``/``value`` must be None or ``query`` itself.

        Returns ``(output, None)`` like ``nn.MultiheadAttention`` with ``need_weights=False``.
        """
        x = query if self.batch_first else query.transpose(0, 1)
        b, t, _ = x.shape
        h, d = self.num_heads, self.head_dim
        q = self.q_proj(x).view(b, t, h, d).transpose(1, 2)
        k = self.k_proj(x).view(b, t, h, d).transpose(1, 2)
        v = self.v_proj(x).view(b, t, h, d).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        y = self.out_proj(y.transpose(1, 2).reshape(b, t, h * d))
        if not self.batch_first:
            y = y.transpose(0, 1)
        return y, None
