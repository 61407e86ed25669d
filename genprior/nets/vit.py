"""A small Vision Transformer for small-image condensation benchmarks.

Patches of 4 px at 28/32 px, 8 at 64 and 16 at 128, so every resolution gives
7x7 or 8x8 tokens; dim 128, 4 pre-norm blocks, 4 heads, MLP ratio 2. Small
enough to train from a few hundred images on a CPU. Tokens are mean-pooled
rather than read from a class token: with little data that trains more
reliably (Beyer, Zhai & Kolesnikov, Better plain ViT baselines, 2022).

Attention is written out as softmax(QK^T)V instead of calling the fused kernel,
because gradient matching differentiates the network's parameter gradients
again, and the fused kernels have no double backward.
"""
from __future__ import annotations

from typing import List

import torch
from torch import nn

from ..errors import GenpriorError
from ._registry import NETS


def patch_size_for(resolution: int) -> int:
    return max(4, resolution // 8)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(n, t, d)
        return self.proj(out)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp_ratio * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    def __init__(
        self,
        channels: int,
        num_classes: int,
        resolution: int,
        dim: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: int = 2,
    ):
        super().__init__()
        patch = patch_size_for(resolution)
        if resolution % patch:
            raise GenpriorError(f"ViT patch size {patch} does not divide resolution {resolution}: use a resolution "
                                f"that {patch} divides (e.g. {resolution - resolution % patch}) or leave vit out of "
                                "--archs")
        if dim % heads:
            raise GenpriorError(f"ViT dim {dim} is not divisible by heads {heads}: pass a dim that is a multiple of "
                                "heads")
        tokens = (resolution // patch) ** 2
        self.patch_embed = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch)
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.feature_dim = dim
        self.classifier = nn.Linear(dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed

    def features(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = self.tokens(x)
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tokens(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x).mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


@NETS.register(
    "vit",
    summary="small ViT: dim 128, 4 blocks, 4 heads, 7x7 or 8x8 patches, mean-pooled tokens",
    paper="Dosovitskiy et al., An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale, ICLR 2021",
    default_norm="layernorm",
)
def vit(channels, num_classes, resolution, *, dim=128, depth=4, heads=4, mlp_ratio=2):
    return ViT(channels, num_classes, resolution, dim, depth, heads, mlp_ratio)
