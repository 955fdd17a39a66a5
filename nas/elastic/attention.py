"""Elastic multi-head attention in the layout of diffusers' `Attention`.

Parameters are named `to_q`, `to_k`, `to_v`, `to_out.0` as in diffusers, so a
diffusers checkpoint maps onto it by name. Heads are sliced whole (the first
`heads` heads of `dim_head` each); the query width follows the block's width.
The maths is diffusers' `AttnProcessor2_0`: softmax(q kᵀ / √d) v per head.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from nas.elastic.modules import ElasticLinear, configure
from nas.quant.layers import QuantArg


class ElasticAttention(nn.Module):
    """Self-attention (`cross_attention_dim=None`) or cross-attention to a context."""

    def __init__(
        self,
        query_dim: int,
        heads: int,
        dim_head: int,
        cross_attention_dim: int | None = None,
        bias: bool = False,
        out_bias: bool = True,
        quant: dict[str, QuantArg] | QuantArg = None,
        context_follows_width: bool = False,
    ) -> None:
        super().__init__()
        inner = heads * dim_head
        q = (
            quant
            if isinstance(quant, dict)
            else {n: quant for n in ("to_q", "to_k", "to_v", "to_out.0")}
        )
        ctx = cross_attention_dim or query_dim
        self.heads, self.dim_head, self.is_cross = heads, dim_head, cross_attention_dim is not None
        # A context of fixed width (a text encoder's) keeps to_k/to_v inputs whole; a context
        # projected inside the model (PixArt's caption projection) has the model's width.
        self.context_follows_width = context_follows_width
        self.to_q = ElasticLinear(query_dim, inner, bias=bias, quant=q.get("to_q"))
        self.to_k = ElasticLinear(ctx, inner, bias=bias, quant=q.get("to_k"))
        self.to_v = ElasticLinear(ctx, inner, bias=bias, quant=q.get("to_v"))
        self.to_out = nn.ModuleList(
            [
                ElasticLinear(inner, query_dim, bias=out_bias, quant=q.get("to_out.0")),
                nn.Dropout(0.0),
            ]
        )
        self.active_heads: int | None = None

    def set_active(self, width: int | None, heads: int | None) -> None:
        """Run with query width `width` and the first `heads` heads (None: the maximum)."""
        self.active_heads = heads
        inner = None if heads is None else heads * self.dim_head
        kv_in = None if self.is_cross and not self.context_follows_width else width
        configure(self.to_q, inp=width, out=inner)
        configure(self.to_k, inp=kv_in, out=inner)
        configure(self.to_v, inp=kv_in, out=inner)
        configure(self.to_out[0], inp=inner, out=width)

    def reset_active(self) -> None:
        self.active_heads = None

    def forward(
        self, x: Tensor, context: Tensor | None = None, bias: Tensor | None = None
    ) -> Tensor:
        # x: (B, N, width); context: (B, M, ctx_dim) for cross-attention; bias: an additive
        # attention bias (B, 1, M) or (B, N, M) as diffusers' prepared masks, shared by heads.
        ctx = x if context is None else context
        heads = self.active_heads or self.heads
        b = x.shape[0]
        q = self.to_q(x).view(b, -1, heads, self.dim_head).transpose(1, 2)
        k = self.to_k(ctx).view(b, -1, heads, self.dim_head).transpose(1, 2)
        v = self.to_v(ctx).view(b, -1, heads, self.dim_head).transpose(1, 2)
        if bias is not None:
            bias = bias.to(q.dtype).unsqueeze(1)  # (B, 1, N|1, M): broadcast over heads
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, heads, N, dim_head)
        o = o.transpose(1, 2).reshape(b, -1, heads * self.dim_head)
        return self.to_out[1](self.to_out[0](o))
