"""Batch norm folded into the convolution before it: a cheaper network with the same outputs.

In eval mode a BatchNorm after a convolution is an affine map per output channel c:

    bn(conv(x))_c = conv(x)_c · s_c + (β_c − μ_c · s_c),    s_c = γ_c / sqrt(σ²_c + ε)

so the pair is one convolution with weights W_c · s_c and bias (b_c − μ_c) · s_c + β_c: one
pass over the activations instead of two. Nothing is assumed fixed: `refold()` recomputes the
folded weights from the model's live tensors after every move (a few elementwise products,
tiny beside a forward pass), so a plane that moves the convolutions, BN's γ and β
(`ignore: none`) or its running statistics (`space: states`, interpolations) is folded at
the moved values. The outputs agree with the unfolded network's to fp32 rounding (the sums
are associated differently: ~1e-7 relative), not bit for bit; every rank folds the same way,
so a surface is still the same bits on any rank count.

Which pairs fold is read from the model's graph (torch.fx): a Conv1d/2d/3d (or a Linear) whose
output goes only to a BatchNorm of its dimension that tracks running statistics, each module
called once (DenseNet's BN → ReLU → conv order leaves only the BN after each bottleneck's 1×1
convolution foldable). The folded network shares every other module and tensor with the
model. A model that torch.fx cannot trace (data-dependent control flow) or that has no such
pair is evaluated as it is, and `reason` says why.

Input: a model in eval mode, holding its weights. Output: `Folded`: the network to evaluate,
the number of pairs folded, and `refold()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import fx, nn

_CONV_BN: tuple[tuple[type[nn.Module], type[nn.Module]], ...] = (
    (nn.Linear, nn.BatchNorm1d),  # a linear layer is a 1×1 convolution of a 1-D input
    (nn.Conv1d, nn.BatchNorm1d),
    (nn.Conv2d, nn.BatchNorm2d),
    (nn.Conv3d, nn.BatchNorm3d),
)


@dataclass(frozen=True)
class _Pair:
    conv: nn.Module  # the model's convolution (its live weights)
    norm: nn.modules.batchnorm._BatchNorm  # the model's batch norm after it
    folded: nn.Module  # the convolution the folded network calls instead of the two


@dataclass
class Folded:
    network: nn.Module  # what to evaluate: the folded graph, or the model itself
    pairs: list[_Pair] = field(default_factory=list)
    reason: str = ""  # why nothing was folded

    @property
    def count(self) -> int:
        return len(self.pairs)

    @torch.no_grad()
    def refold(self) -> None:
        """Recompute every folded convolution from the live tensors of the model."""
        for pair in self.pairs:
            conv, norm, folded = pair.conv, pair.norm, pair.folded
            assert norm.running_var is not None and norm.running_mean is not None
            scale = torch.rsqrt(norm.running_var + norm.eps)
            if norm.weight is not None:
                scale = scale * norm.weight
            shape = (-1,) + (1,) * (conv.weight.dim() - 1)
            torch.mul(conv.weight, scale.reshape(shape), out=folded.weight)
            shift = -norm.running_mean if conv.bias is None else conv.bias - norm.running_mean
            torch.mul(shift, scale, out=folded.bias)
            if norm.bias is not None:
                folded.bias.add_(norm.bias)


def fold_batch_norm(model: nn.Module) -> Folded:
    """The model with each foldable conv → BN pair as one convolution (see the module doc)."""
    if not any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules()):
        return Folded(model, reason="the model has no batch norm")
    try:
        graph = fx.symbolic_trace(model)
    except Exception as error:  # noqa: BLE001 - any tracing failure means: evaluate as it is
        text = " ".join(f"{type(error).__name__}: {error}".split())[:160]
        return Folded(model, reason=f"torch.fx cannot trace the model ({text})")
    modules = dict(graph.named_modules())
    calls: dict[str, int] = {}
    for node in graph.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in list(graph.graph.nodes):
        norm = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(norm, nn.modules.batchnorm._BatchNorm):
            continue
        source = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if not isinstance(source, fx.Node) or source.op != "call_module":
            continue
        conv = modules.get(source.target)
        if conv is None or not _foldable(conv, norm) or len(source.users) != 1:
            continue
        if calls[source.target] != 1 or calls[node.target] != 1:
            continue  # a module called twice shares its weights between two places
        folded = _folded_convolution(conv)
        name = f"lsurf_folded_{len(pairs)}"
        graph.add_submodule(name, folded)
        source.target = name
        node.replace_all_uses_with(source)
        graph.graph.erase_node(node)
        pairs.append(_Pair(conv, norm, folded))
    if not pairs:
        return Folded(model, reason="no convolution is followed by its own batch norm")
    graph.graph.lint()
    graph.recompile()
    result = Folded(graph.eval(), pairs)
    result.refold()
    return result


def _foldable(conv: nn.Module, norm: nn.modules.batchnorm._BatchNorm) -> bool:
    return any(
        type(conv) is conv_type
        and type(norm) is norm_type
        and norm.track_running_stats
        and norm.running_var is not None
        and getattr(conv, "padding_mode", "zeros") == "zeros"
        for conv_type, norm_type in _CONV_BN
    )


def _folded_convolution(conv: nn.Module) -> nn.Module:
    """A convolution (or linear layer) like `conv`, with a bias, whose weights `Folded.refold`
    writes."""
    weight = conv.weight
    if isinstance(conv, nn.Linear):
        folded: nn.Module = nn.Linear(
            conv.in_features, conv.out_features, device=weight.device, dtype=weight.dtype
        )
    else:
        folded = type(conv)(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=True,
            device=weight.device,
            dtype=weight.dtype,
        )
    # The layout of the model's weights (channels_last stays channels_last); no gradients.
    folded.weight = nn.Parameter(torch.empty_like(weight), requires_grad=False)
    folded.bias = nn.Parameter(
        torch.empty(weight.shape[0], device=weight.device, dtype=weight.dtype),
        requires_grad=False,
    )
    return folded.eval()
