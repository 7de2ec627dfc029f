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
convolution foldable), and from the shapes the probe batches give it: BN normalizes dimension
1 of its input, and the fold scales the convolution's output channels (a Linear's output
features), so the two agree only where the channels are dimension 1, i.e. on a batched
convolution's output and on a Linear's (N, features) output. A Linear on (N, L, features)
inputs feeds BatchNorm1d an (N, L, features) tensor whose dimension 1 is L: that pair, and
any whose BN is not as wide as the convolution's outputs, stays as it is and `skipped` says
why. The folded network shares every other module and tensor with the model. A model that
torch.fx cannot trace (data-dependent control flow) or that has no pair to fold is evaluated
as it is, and `reason` says why.

Input: a model in eval mode, holding its weights, and probe batches of its inputs. Output:
`Folded`: the network to evaluate, the number of pairs folded, those left unfolded, and
`refold()`. `with_moved_norms` gives the copy the evaluator checks a fold on, with BN away
from the initial values that would hide a wrong one.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeAlias, TypeGuard

import torch
import torch.nn.functional as F
from torch import fx, nn

_BatchNorm = nn.modules.batchnorm._BatchNorm
_Convolution: TypeAlias = nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d  # what a BN folds into

_CONV_BN: tuple[tuple[type[_Convolution], type[_BatchNorm]], ...] = (
    (nn.Linear, nn.BatchNorm1d),  # a linear layer is a 1×1 convolution of a 1-D input
    (nn.Conv1d, nn.BatchNorm1d),
    (nn.Conv2d, nn.BatchNorm2d),
    (nn.Conv3d, nn.BatchNorm3d),
)


@dataclass(frozen=True)
class _Pair:
    conv: _Convolution  # the model's convolution (its live weights)
    norm: _BatchNorm  # the model's batch norm after it
    folded: _Convolution  # the convolution the folded network calls instead of the two


@dataclass
class Folded:
    network: nn.Module  # what to evaluate: the folded graph, or the model itself
    pairs: list[_Pair] = field(default_factory=list)
    reason: str = ""  # why nothing was folded
    # Each conv → BN pair of the graph left unfolded because its fold would not be exact on
    # the probe batches' shapes: 'fc → norm: why'.
    skipped: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.pairs)

    @torch.no_grad()
    def refold(self) -> None:
        """Recompute every folded convolution from the live tensors of the model."""
        for pair in self.pairs:
            conv, norm, folded = pair.conv, pair.norm, pair.folded
            assert norm.running_var is not None and norm.running_mean is not None
            assert folded.bias is not None  # _folded_convolution gives every one a bias
            scale = torch.rsqrt(norm.running_var + norm.eps)
            if norm.weight is not None:
                scale = scale * norm.weight
            shape = (-1,) + (1,) * (conv.weight.dim() - 1)
            torch.mul(conv.weight, scale.reshape(shape), out=folded.weight)
            shift = -norm.running_mean if conv.bias is None else conv.bias - norm.running_mean
            torch.mul(shift, scale, out=folded.bias)
            if norm.bias is not None:
                folded.bias.add_(norm.bias)


def fold_batch_norm(model: nn.Module, probes: Iterable[torch.Tensor]) -> Folded:
    """The model with each conv → BN pair whose fold is exact on the `probes` (batches of the
    model's inputs) as one convolution (see the module doc)."""
    if not any(isinstance(module, _BatchNorm) for module in model.modules()):
        return Folded(model, reason="the model has no batch norm")
    try:
        graph = fx.symbolic_trace(model)
    except Exception as error:  # noqa: BLE001 - any tracing failure means: evaluate as it is
        return Folded(model, reason=f"torch.fx cannot trace the model ({_reason(error)})")
    modules = dict(graph.named_modules())
    calls: dict[str, int] = {}
    for node in graph.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    # (the BN's node, its convolution's node, the convolution, the BN)
    candidates: list[tuple[fx.Node, fx.Node, _Convolution, _BatchNorm]] = []
    for node in graph.graph.nodes:
        norm = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(norm, _BatchNorm):
            continue
        source = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if not isinstance(source, fx.Node) or source.op != "call_module":
            continue
        conv = modules.get(source.target)
        if conv is None or not _foldable(conv, norm) or len(source.users) != 1:
            continue
        if calls[_module_name(source)] != 1 or calls[node.target] != 1:
            continue  # a module called twice shares its weights between two places
        candidates.append((node, source, conv, norm))
    if not candidates:
        return Folded(model, reason="no convolution is followed by its own batch norm")
    names = [_module_name(source) for _, source, _, _ in candidates]
    try:
        shapes = _output_shapes(graph, names, probes)
    except Exception as error:  # noqa: BLE001 - a graph that fails where the model ran: unfolded
        return Folded(model, reason=f"the traced graph fails on a probe batch ({_reason(error)})")
    pairs: list[_Pair] = []
    skipped: list[str] = []
    for node, source, conv, norm in candidates:
        inexact = _inexact(conv, norm, shapes[_module_name(source)])
        if inexact:
            skipped.append(f"{source.target} → {node.target}: {inexact}")
            continue
        folded = _folded_convolution(conv)
        name = f"lsurf_folded_{len(pairs)}"
        graph.add_submodule(name, folded)
        source.target = name
        node.replace_all_uses_with(source)
        graph.graph.erase_node(node)
        pairs.append(_Pair(conv, norm, folded))
    if not pairs:
        return Folded(model, reason="; ".join(skipped), skipped=skipped)
    graph.graph.lint()
    graph.recompile()
    result = Folded(graph.eval(), pairs, skipped=skipped)
    result.refold()
    return result


def fuse_activations(folded: Folded) -> tuple[nn.Module, int]:
    """The folded network with each folded 2-D convolution whose output goes only to a ReLU,
    or only to an addition whose sum goes only to a ReLU (a residual block's end), computed
    by one oneDNN call (`torch.ops.mkldnn._convolution_pointwise`, the kernels inductor
    itself fuses into on a CPU): the activations are written once instead of two or three
    times. The new graph reads the folded convolutions' live weights, so `refold` reaches
    it; the folded network is left as it is. Returns the network and how many were fused
    (0: the folded network itself). For eager fp32 on a CPU with oneDNN only; the evaluator
    checks the fused outputs against the model's before it uses them."""
    network = folded.network
    if not isinstance(network, fx.GraphModule) or not torch.backends.mkldnn.is_available():
        return network, 0
    graph = fx.Graph()
    copies: dict[fx.Node, fx.Node] = {}
    graph.output(graph.graph_copy(network.graph, copies))
    modules = dict(network.named_modules())
    folded_ids = {id(pair.folded) for pair in folded.pairs}
    convolutions = {name for name, module in modules.items() if id(module) in folded_ids}

    def convolution(node: object) -> nn.Conv2d | None:
        """The fusable folded Conv2d `node` calls, if it does and nothing else reads its output."""
        if not isinstance(node, fx.Node) or node.op != "call_module" or len(node.users) != 1:
            return None
        module = modules.get(_module_name(node))
        fusable = (
            _module_name(node) in convolutions
            and type(module) is nn.Conv2d
            and not isinstance(module.padding, str)
            and len(node.args) == 1
            and not node.kwargs
        )
        return module if fusable and isinstance(module, nn.Conv2d) else None

    fused = 0
    for node in list(graph.nodes):
        if not _is_relu(node, modules):
            continue
        source = node.args[0]
        conv = convolution(source)
        if conv is not None:
            assert isinstance(source, fx.Node)
            _fused_call(graph, node, source, conv, _convolution_relu, ())
            graph.erase_node(node)
            graph.erase_node(source)
            fused += 1
            continue
        if not _is_addition(source):
            continue
        assert isinstance(source, fx.Node)
        for first, other in (source.args, tuple(reversed(source.args))):
            conv = convolution(first)
            if conv is None or not isinstance(other, fx.Node):
                continue
            assert isinstance(first, fx.Node)
            _fused_call(graph, node, first, conv, _convolution_add_relu, (other,))
            graph.erase_node(node)
            graph.erase_node(source)
            graph.erase_node(first)
            fused += 1
            break
    if not fused:
        return network, 0
    graph.lint()
    return fx.GraphModule(network, graph).eval(), fused


def _is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """A ReLU of one input (in place or not: fusing reads only inputs that nothing else reads)."""
    if node.op == "call_module":
        return type(modules.get(_module_name(node))) is nn.ReLU and len(node.args) == 1
    return (
        node.op == "call_function"
        and node.target in (F.relu, torch.relu, torch.relu_)
        and len(node.args) == 1
        and set(node.kwargs) <= {"inplace"}
    )


def _is_addition(node: object) -> bool:
    """`a + b` of two tensors, whose sum only a ReLU reads."""
    return (
        isinstance(node, fx.Node)
        and node.op == "call_function"
        and node.target in (operator.add, torch.add)
        and len(node.args) == 2
        and not node.kwargs
        and len(node.users) == 1
    )


def _fused_call(
    graph: fx.Graph,
    relu: fx.Node,
    conv_node: fx.Node,
    conv: nn.Conv2d,
    function: Callable[..., torch.Tensor],
    others: tuple[fx.Node, ...],
) -> None:
    """A call of `function(input, *others, weight, bias, padding, stride, dilation, groups)`
    in place of `relu`, which ends the chain that starts at `conv_node`'s call of `conv`."""
    name = _module_name(conv_node)
    # padding is a tuple of ints here (fuse_activations leaves string paddings alone)
    padding = [int(size) for size in conv.padding]
    layout = (padding, list(conv.stride), list(conv.dilation), conv.groups)
    with graph.inserting_before(relu):
        weight = graph.get_attr(f"{name}.weight")  # the live tensors refold writes
        bias = graph.get_attr(f"{name}.bias")
        call = graph.call_function(function, (conv_node.args[0], *others, weight, bias, *layout))
    relu.replace_all_uses_with(call)


def _convolution_relu(
    inputs: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    padding: list[int],
    stride: list[int],
    dilation: list[int],
    groups: int,
) -> torch.Tensor:
    """relu(conv2d(inputs)) in one oneDNN call."""
    return torch.ops.mkldnn._convolution_pointwise(
        inputs, weight, bias, padding, stride, dilation, groups, "relu", [], ""
    )


def _convolution_add_relu(
    inputs: torch.Tensor,
    other: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    padding: list[int],
    stride: list[int],
    dilation: list[int],
    groups: int,
) -> torch.Tensor:
    """relu(conv2d(inputs) + other) in one oneDNN call."""
    return torch.ops.mkldnn._convolution_pointwise.binary(
        inputs, other, weight, bias, padding, stride, dilation, groups, "add", None, "relu", [], ""
    )


@torch.no_grad()
def with_moved_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of `model` whose BNs' running statistics and affine parameters are moved off
    their values by seeded amounts; every other tensor is the model's own (shared, not
    copied, and never written), and the model itself is left as it is.

    A BN at its initial values (mean 0, variance 1, γ 1, β 0) is the identity, and so is any
    fold of it, right or wrong: comparing folded and unfolded outputs on this copy shows a
    wrong fold that θ* hides and an interpolation's moved statistics would not."""
    norm_tensors = {
        id(tensor)
        for module in model.modules()
        if isinstance(module, _BatchNorm)
        for tensor in (*module.parameters(recurse=False), *module.buffers(recurse=False))
    }
    shared = {
        id(tensor): tensor
        for tensor in (*model.parameters(), *model.buffers())
        if id(tensor) not in norm_tensors
    }
    moved = copy.deepcopy(model, memo=shared)
    generator = torch.Generator().manual_seed(seed)
    for module in moved.modules():
        if not isinstance(module, _BatchNorm):
            continue

        def draw(like: torch.Tensor) -> torch.Tensor:
            # Uniform in [0, 1) per channel, drawn on the CPU: the same on every device.
            return torch.rand(like.shape, generator=generator).to(like.device, like.dtype)

        if module.running_var is not None and module.running_mean is not None:
            module.running_var.mul_(0.5 + draw(module.running_var))
            module.running_mean.add_((draw(module.running_mean) - 0.5) * module.running_var.sqrt())
        if module.weight is not None:
            module.weight.mul_(0.5 + draw(module.weight))
        if module.bias is not None:
            module.bias.add_(draw(module.bias) - 0.5)
    return moved


def _foldable(conv: nn.Module, norm: _BatchNorm) -> TypeGuard[_Convolution]:
    return any(
        type(conv) is conv_type
        and type(norm) is norm_type
        and norm.track_running_stats
        and norm.running_var is not None
        and getattr(conv, "padding_mode", "zeros") == "zeros"
        for conv_type, norm_type in _CONV_BN
    )


def _output_shapes(
    graph: fx.GraphModule, targets: list[str], probes: Iterable[torch.Tensor]
) -> dict[str, set[tuple[int, ...]]]:
    """The shapes each module named in `targets` outputs when the probes run through the
    traced graph (forward hooks, removed again before returning)."""
    shapes: dict[str, set[tuple[int, ...]]] = {target: set() for target in targets}
    handles = []
    for target in targets:

        def record(module: nn.Module, inputs: object, output: torch.Tensor, target=target) -> None:
            shapes[target].add(tuple(output.shape))

        handles.append(graph.get_submodule(target).register_forward_hook(record))
    try:
        with torch.inference_mode():
            for inputs in probes:
                graph(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def _inexact(conv: _Convolution, norm: _BatchNorm, shapes: set[tuple[int, ...]]) -> str:
    """Why folding `norm` into `conv` would not give the pair's outputs, given the shapes
    `conv` output on the probes ('' where it would): BN normalizes dimension 1 of its input;
    the fold scales a convolution's channels, dimension 1 only on a batched convolution's
    output (N, C, ...) and on a Linear's (N, features)."""
    kind = type(conv).__name__
    features = conv.weight.shape[0]  # what the fold scales: output channels (features)
    if norm.num_features != features:
        return f"the BN has {norm.num_features} features, the {kind} {features} outputs"
    if not shapes:
        return "the probe batches never reach it"
    rank = 2 if isinstance(conv, nn.Linear) else conv.weight.dim()  # (N, C, *spatial)
    for shape in sorted(shapes):
        if len(shape) != rank:
            scaled = len(shape) - rank + 1  # where the channels are: the last for a Linear
            return (
                f"BN normalizes dimension 1 of its {shape} input, the fold would scale "
                f"dimension {scaled} (the {kind}'s {features} outputs)"
            )
    return ""


def _folded_convolution(conv: _Convolution) -> _Convolution:
    """A convolution (or linear layer) like `conv`, with a bias, whose weights `Folded.refold`
    writes."""
    weight = conv.weight
    if isinstance(conv, nn.Linear):
        folded: _Convolution = nn.Linear(
            conv.in_features, conv.out_features, device=weight.device, dtype=weight.dtype
        )
    else:
        # conv's own class. torch types its sizes tuple[int, ...] but each ConvNd's
        # constructor as tuples of its dimension: called as a plain callable.
        convolution: Callable[..., _Convolution] = type(conv)
        folded = convolution(
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


def _module_name(node: fx.Node) -> str:
    """The name of the module a call_module node calls: its target (fx makes it a str)."""
    assert isinstance(node.target, str), node.target
    return node.target


def _reason(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())[:160]
