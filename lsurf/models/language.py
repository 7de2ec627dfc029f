"""Causal language models built from their sizes, never downloaded: a tiny plain-torch
transformer and Hugging Face's GPT-2 from a local `GPT2Config`.

Both take token ids (B, T) and give next-token logits (B, T, vocab): the tiny transformer as
a tensor, GPT-2 as a CausalLMOutput whose `.logits` the evaluation unwraps
(lsurf.losses.outputs_of). Each builder takes model.kwargs as keywords: `tiny_transformer`
vocab_size, d_model, layers, heads, context; `gpt2` any of GPT2Config's keys. GPT-2 ties its
LM head to the token embedding: one tensor, so named_parameters() and the state_dict's
movable view (lsurf.params) list it once and a sweep moves it once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from lsurf.errors import ConfigError


class _Block(nn.Module):
    """Pre-norm causal self-attention then an MLP, each added to the residual stream."""

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.attention_norm = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.projection = nn.Linear(d_model, d_model)
        self.mlp_norm = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape  # (B, T, C)
        q, k, v = self.qkv(self.attention_norm(x)).split(width, dim=2)
        # (B, heads, T, C/heads) each; is_causal: position t attends to positions ≤ t only.
        q, k, v = (
            part.view(batch, tokens, self.heads, width // self.heads).transpose(1, 2)
            for part in (q, k, v)
        )
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.projection(attended.transpose(1, 2).reshape(batch, tokens, width))
        return x + self.mlp(self.mlp_norm(x))


class TinyTransformer(nn.Module):
    """Token and position embeddings, `layers` causal blocks, a final norm and an LM head."""

    def __init__(
        self,
        vocab_size: int = 64,
        d_model: int = 32,
        layers: int = 2,
        heads: int = 2,
        context: int = 32,
    ) -> None:
        super().__init__()
        if d_model % heads:
            raise ConfigError(f"model.kwargs: d_model {d_model} must be divisible by heads {heads}")
        self.context = context
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(context, d_model)
        self.blocks = nn.Sequential(*(_Block(d_model, heads) for _ in range(layers)))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        tokens = ids.shape[1]  # ids (B, T)
        positions = torch.arange(tokens, device=ids.device)
        x = self.token_embedding(ids) + self.position_embedding(positions)  # (B, T, C)
        return self.head(self.norm(self.blocks(x)))  # (B, T, vocab)


def gpt2(**kwargs: Any) -> nn.Module:
    """GPT2LMHeadModel(GPT2Config(**kwargs)), randomly initialized: weights come from a
    checkpoint, never from a download."""
    try:
        from transformers import GPT2Config, GPT2LMHeadModel  # heavy, optional: only here
    except ImportError:
        raise ConfigError(
            "model gpt2 needs the transformers package; pip install lsurf[transformers]"
        ) from None
    known = set(GPT2Config().to_dict())
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ConfigError(
            f"model.kwargs {', '.join(unknown)} are not GPT2Config keys; use e.g. vocab_size, "
            "n_positions, n_embd, n_layer, n_head"
        )
    vocabulary = kwargs.get("vocab_size", GPT2Config().vocab_size)
    # GPT-2's own bos/eos id (50256) lies outside a small vocabulary; its last id stands in.
    for key in ("bos_token_id", "eos_token_id"):
        kwargs.setdefault(key, vocabulary - 1)
    return GPT2LMHeadModel(GPT2Config(**kwargs))


MODELS: dict[str, Callable[..., nn.Module]] = {"tiny_transformer": TinyTransformer, "gpt2": gpt2}
