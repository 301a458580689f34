"""The PyTorch peers of the benchmark: timm + autograd input×gradient, and LibraGrad FullGrad+ written
the usual hook-based way (what a user would pick instead of libra-jax).

Libra FullGrad+ here: timm's attention, LayerNorm and GELU are swapped (in this benchmark only) for
modules computing the same values with `.detach()` on softmax(QKᵀ), on the LayerNorm denominator and on
the GELU gate Φ(x); forward hooks retain the gradient at every block input and at the output of every
bias-carrying module downstream of h₀; one backward. Map = Σ_l Σ_c h_l·∂f/∂h_l + Σ_bias Σ_c b_c·∂f/∂out
(token maps (B, N); pooled-head biases go to token 0, as libra-jax does). torch is imported only here.
"""

from __future__ import annotations

import math
import os
import resource
from collections.abc import Callable

import timm
import torch
from timm.models.vision_transformer import Attention
from torch import nn


class DetachLayerNorm(nn.LayerNorm):
    """LayerNorm whose √(σ²+ε) is a constant in the backward (LibraGrad's norm rule)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc = x - x.mean(-1, keepdim=True)
        std = (xc.pow(2).mean(-1, keepdim=True) + self.eps).sqrt().detach()
        return xc / std * self.weight + self.bias


class DetachGELU(nn.Module):
    """x·Φ(x) with the gate Φ(x) a constant in the backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (0.5 * (1 + torch.erf(x / math.sqrt(2)))).detach()


class DetachAttention(nn.Module):
    """timm `Attention` (no mask, no gate) with softmax(QKᵀ) a constant: the gradient flows through V only."""

    def __init__(self, inner: Attention):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor, **_) -> torch.Tensor:
        a = self.inner
        b, n, c = x.shape
        q, k, v = a.qkv(x).reshape(b, n, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = a.q_norm(q), a.k_norm(k)
        attn = (q * a.scale @ k.transpose(-2, -1)).softmax(-1).detach()
        return a.proj(a.norm((attn @ v).transpose(1, 2).reshape(b, n, c)))


def libra_modules(model: nn.Module) -> nn.Module:
    """Swap every LayerNorm, GELU and Attention of a timm ViT for its detached twin (weights kept)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.LayerNorm):
                twin = DetachLayerNorm(child.normalized_shape, eps=child.eps).to(child.weight)
                twin.load_state_dict(child.state_dict())
            elif isinstance(child, nn.GELU):
                twin = DetachGELU()
            elif isinstance(child, Attention):
                twin = DetachAttention(child)
            else:
                continue
            setattr(parent, name, twin)
    return model


def prob_target(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Σ_b softmax(logits_b)[y_b] (the S1 target), in float32."""
    return logits.float().softmax(-1).gather(1, y[:, None]).sum()


def ixg_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Vanilla input×gradient (B, H, W): one forward, one backward to the frozen model's input."""
    xi = x.clone().requires_grad_(True)
    prob_target(model(xi), y).backward()
    return (xi * xi.grad).sum(1)


def fullgrad_plus_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Hook-based FullGrad+ token maps (B, N) of a `libra_modules` model: one forward, one backward."""
    kept: list[tuple[str, torch.Tensor, nn.Module]] = []

    def keep(kind: str) -> Callable:
        def hook(module, inputs, output):
            tensor = inputs[0] if kind == "input" else output
            tensor.retain_grad()
            kept.append((kind, tensor, module))

        return hook

    handles = [block.register_forward_hook(keep("input")) for block in model.blocks]
    downstream = [*model.blocks, model.norm, model.fc_norm, model.head]
    handles += [
        m.register_forward_hook(keep("bias"))
        for part in downstream
        for m in part.modules()
        if isinstance(m, nn.Linear | nn.LayerNorm) and m.bias is not None
    ]
    try:
        xi = x.clone().requires_grad_(True)  # so the block inputs have a gradient to retain
        prob_target(model(xi), y).backward()
    finally:
        for handle in handles:
            handle.remove()
    n = model.patch_embed.num_patches + model.num_prefix_tokens
    total = x.new_zeros(x.shape[0], n, dtype=torch.float32)
    with torch.no_grad():
        for kind, tensor, module in kept:
            weight = tensor if kind == "input" else module.bias
            token_map = (weight * tensor.grad).sum(-1).float()
            if token_map.ndim == 1:  # a pooled (B, C) module: the head and fc_norm
                total[:, 0] += token_map
            else:
                total += token_map
    return total


def peers(name: str, batch: int, dtype: str, cuda: bool) -> tuple[dict[str, Callable], Callable, Callable, str]:
    """({row name: step()}, sync(out), peak_bytes(step) → bytes of the call, a note on device and threads).

    The timm model is random-init and frozen, so only input-side gradients are computed.
    """
    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)  # XLA's CPU client runs one intra-op thread per available core
    device = "cuda" if cuda and torch.cuda.is_available() else "cpu"
    tdtype = getattr(torch, dtype)

    def make():
        return timm.create_model(name, pretrained=False).eval().to(device, tdtype).requires_grad_(False)

    torch.manual_seed(0)
    plain = make()
    libra = libra_modules(make())
    x = torch.randn(batch, 3, 224, 224, device=device, dtype=tdtype)
    y = torch.arange(batch, device=device) % 1000
    steps = {
        "torch/timm IxG (vanilla autograd)": lambda: ixg_step(plain, x, y),
        "torch/timm Libra FullGrad+ (hooks, .detach())": lambda: fullgrad_plus_step(libra, x, y),
    }

    def sync(out):
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    def peak_bytes(step: Callable) -> int:
        """GPU: torch's peak allocation during one call. CPU: growth of the process's peak RSS during it."""
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            sync(step())
            return torch.cuda.max_memory_allocated()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        sync(step())
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024

    return steps, sync, peak_bytes, f"torch {torch.__version__} on {device}, torch.set_num_threads({threads})"
