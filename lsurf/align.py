"""Weight matching (Ainsworth et al. 2022, "Git Re-Basin"): B's hidden units permuted onto A's.

Reordering a network's hidden units (a layer's output channels, the matching input columns
of the layers that read them, the batch-norm entries in between) leaves its function as it
was. Two networks trained from different seeds are often much closer once B's units are put
in A's order; weight matching finds that order by maximizing the inner product of A's
weights with B's permuted ones, one unit space at a time, each step an exact linear
assignment solved by `scipy.optimize.linear_sum_assignment`.

Owns the unit spaces of a network, read from its torch.fx graph (`find_unit_spaces`), the
matching (`match_weights`, returning an `Alignment`) and applying a set of permutations to a
state dict (`permute_units`). Inputs are a model (for its graph only) and state dicts;
outputs are plain values. Writing the aligned checkpoint is
`lsurf.checkpoint.save_aligned_checkpoint`.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from lsurf.errors import AlignmentError, CheckpointError, ConfigError

# The registry's contract: (N, 3, 32, 32) images. The graph is run once on a batch of this
# shape to learn every tensor's shape (batch 2, so that the batch dimension is told apart).
DEFAULT_INPUT_SHAPE: tuple[int, ...] = (3, 32, 32)
_PROBE_BATCH = 2
# A new permutation replaces the current one only when it raises the space's objective by
# more than this fraction of it: ties (equal weights, as at BN's initial values) keep the
# current order, and the passes end instead of cycling among equally good permutations.
_RELATIVE_GAIN = 1e-12

_PLACED = (
    "convolutions, linear layers, batch norms, elementwise activations, pooling, dropout, "
    "flatten, residual adds, zero padding and concatenation of channels"
)


# ------------------------------------------------------------------------- public values


@dataclass(frozen=True)
class Piece:
    """`size` consecutive units of the space `space`, starting at unit `start` of an axis."""

    space: str
    start: int
    size: int


@dataclass(frozen=True)
class PermutedAxis:
    """One axis of one state tensor and the pieces of unit spaces along it.

    Unit u of the axis owns its entries u·inner … u·inner + inner − 1: inner is 1 except
    where a (C, H, W) map was flattened into C·H·W features (VGG's first fc layer reads
    inner = H·W entries per channel). Units in no piece (the network's input channels, the
    logits) never move.
    """

    tensor: str
    axis: int
    pieces: tuple[Piece, ...]
    inner: int


@dataclass(frozen=True)
class UnitSpaces:
    """The permutable unit spaces of a network, and every tensor axis they permute.

    A space is named after the first layer (in graph order) that produces it, e.g. 'fc1' or
    'layer1.0.conv1'; units tied through a residual add share one space, named after the
    earliest of them ('conv1' for every stage-1 residual channel of a CIFAR ResNet). Where
    only a part of a layer's output is tied to another space (the channels a zero-padding
    shortcut carries over, a concatenation), the parts are spaces of their own, named with
    their unit range: 'layer2.0.conv2[0:8]'.
    """

    sizes: dict[str, int]  # space name -> number of units, in graph order
    axes: tuple[PermutedAxis, ...]


@dataclass(frozen=True)
class Alignment:
    """The outcome of `match_weights`.

    `state_dict` is B's state with every unit space permuted (parameters and buffers, the
    running statistics included; `num_batches_tracked` and every other untouched entry
    copied as it was): the same function as B, its units in A's order. Aligned unit i of a
    space is B's unit `permutations[space][i]`. `iterations` counts the passes over all
    spaces, the last of them the one that changed nothing when `converged`.
    """

    state_dict: dict[str, torch.Tensor]
    permutations: dict[str, np.ndarray]
    iterations: int
    converged: bool
    seed: int


# ------------------------------------------------------------------------- the public API


def find_unit_spaces(
    model: nn.Module, *, input_shape: Sequence[int] = DEFAULT_INPUT_SHAPE
) -> UnitSpaces:
    """Read `model`'s unit spaces from its torch.fx graph.

    Conv and Linear layers produce a space (their output channels or features) and read
    their input's; batch norm (weight, bias, running mean and variance), elementwise
    activations, dropout, pooling and flatten (channel-major, from dimension 1) carry a
    space through; an add, subtract or multiply of two tensors ties their units together;
    zero padding of the channels adds spaces for the padded channels and a concatenation of
    channels puts spaces side by side. The network's input channels and its output logits
    never move. Anything else (an unknown layer, a reshape that mixes channels, a grouped
    convolution, ...) raises one AlignmentError line naming the first node it cannot place.
    The model is run once, in eval mode and without gradients, on a zero batch of
    `input_shape`, to learn the shapes; its weights and modes are left as they were.
    """
    graph = _trace(model)
    _propagate_shapes(graph, model, tuple(input_shape))
    return _GraphReader(graph, type(model).__name__).read()


@torch.no_grad()
def match_weights(
    model: nn.Module,
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    *,
    seed: int = 0,
    max_iterations: int = 100,
    input_shape: Sequence[int] = DEFAULT_INPUT_SHAPE,
) -> Alignment:
    """Permute B's units to match A's, both state dicts of `model`'s architecture.

    Coordinate ascent on the sum, over every tensor, of the inner product of A's tensor with
    B's permuted one: for one space at a time, with every other space's permutation held,
    that sum is a linear assignment between A's and B's units of the space, solved exactly.
    Each pass visits the spaces in an order drawn from `seed`; passes stop when one changes
    no permutation, or after `max_iterations`. The result depends only on the two states
    and the seed. Raises AlignmentError for a model it cannot align, CheckpointError for a
    state that does not fit the model.
    """
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, int):
        raise ConfigError(f"max_iterations must be a whole number, got {max_iterations!r}")
    if max_iterations < 1:
        raise ConfigError(f"max_iterations must be at least 1, got {max_iterations}")
    spaces = find_unit_spaces(model, input_shape=input_shape)
    _require_same_tensors(state_a, state_b)
    _require_fit(spaces, state_a, "A")
    objective = _Objective(spaces, state_a, state_b)
    permutations = {name: np.arange(size) for name, size in spaces.sizes.items()}
    names = list(spaces.sizes)
    order = np.random.default_rng(seed)
    iterations, converged = 0, False
    while not converged and iterations < max_iterations:
        iterations += 1
        converged = True
        for index in order.permutation(len(names)):
            name = names[index]
            better = objective.better_permutation(name, permutations)
            if better is not None:
                permutations[name] = better
                converged = False
    state = permute_units(spaces, state_b, permutations)
    return Alignment(state, permutations, iterations, converged, seed)


@torch.no_grad()
def permute_units(
    spaces: UnitSpaces,
    state: Mapping[str, torch.Tensor],
    permutations: Mapping[str, np.ndarray | Sequence[int]],
) -> dict[str, torch.Tensor]:
    """A copy of `state` with each space's units reordered: new unit i is old unit p[i].

    `permutations` holds one permutation per space of `spaces` (as `Alignment.permutations`
    or a checkpoint's recorded lists). Every entry of `state` is copied, the ones no space
    touches unchanged, so the result shares no memory with `state`.
    """
    _require_fit(spaces, state, "to permute")
    orders = _checked_permutations(spaces, permutations)
    permuted = {key: value.clone() for key, value in state.items()}
    for axis in spaces.axes:
        tensor = permuted[axis.tensor]
        entries = _entry_order(axis, orders, tensor.shape[axis.axis], tensor.device)
        permuted[axis.tensor] = tensor.index_select(axis.axis, entries)
    return permuted


# ------------------------------------------------------------------------- weight matching


class _Objective:
    """Σ over tensors of ⟨A, permuted B⟩, viewed one space at a time as an assignment."""

    def __init__(
        self,
        spaces: UnitSpaces,
        state_a: Mapping[str, torch.Tensor],
        state_b: Mapping[str, torch.Tensor],
    ) -> None:
        self.spaces = spaces
        # float64: the gain test compares sums of many products; float32 would turn ties
        # into rounding noise.
        self.b = {axis.tensor: state_b[axis.tensor].double() for axis in spaces.axes}
        self.a_units = [
            _unit_rows(state_a[axis.tensor].double(), axis.axis, axis.inner) for axis in spaces.axes
        ]
        # For each space, where it lies: (index into spaces.axes, piece).
        self.places: dict[str, list[tuple[int, Piece]]] = {name: [] for name in spaces.sizes}
        # For each tensor, its permuted axes (indices into spaces.axes).
        self.axes_of: dict[str, list[int]] = {}
        for index, axis in enumerate(spaces.axes):
            self.axes_of.setdefault(axis.tensor, []).append(index)
            for piece in axis.pieces:
                self.places[piece.space].append((index, piece))
        # A space on two axes of one tensor (a layer whose output is added to its input, or
        # fed back into it) makes the objective quadratic in that space's permutation: the
        # assignment then only proposes one, and the exact objective decides. Otherwise the
        # passes could cycle, each step gaining on its linear view and losing in truth.
        self.quadratic = {
            name
            for name, places in self.places.items()
            if len({(spaces.axes[i].tensor, spaces.axes[i].axis) for i, _ in places})
            > len({spaces.axes[i].tensor for i, _ in places})
        }
        self.a = {
            tensor: state_a[tensor].double()
            for name in sorted(self.quadratic)
            for tensor in self._tensors_of(name)
        }

    def better_permutation(
        self, name: str, permutations: Mapping[str, np.ndarray]
    ) -> np.ndarray | None:
        """The best permutation of space `name` given the others, or None if the current
        one is as good."""
        similarity = self._similarity(name, permutations)  # (A's units, B's units)
        _, proposal = linear_sum_assignment(similarity, maximize=True)
        proposal = proposal.astype(np.int64)
        if name in self.quadratic:
            current = self._exact(name, permutations)
            proposed = self._exact(name, {**permutations, name: proposal})
        else:
            units = np.arange(len(proposal))
            current = similarity[units, permutations[name]].sum()
            proposed = similarity[units, proposal].sum()
        if proposed - current > _RELATIVE_GAIN * (abs(current) + abs(proposed)):
            return proposal
        return None

    def _exact(self, name: str, permutations: Mapping[str, np.ndarray]) -> float:
        """Σ ⟨A, permuted B⟩ over the tensors that space `name` lies on."""
        total = 0.0
        for tensor in self._tensors_of(name):
            b = self.b[tensor]
            for index in self.axes_of[tensor]:
                axis = self.spaces.axes[index]
                b = b.index_select(
                    axis.axis, _entry_order(axis, permutations, b.shape[axis.axis], b.device)
                )
            total += float((self.a[tensor] * b).sum())
        return total

    def _tensors_of(self, name: str) -> list[str]:
        # In a fixed order (not a set's): the float sums must not depend on hashing.
        return list(dict.fromkeys(self.spaces.axes[index].tensor for index, _ in self.places[name]))

    def _similarity(self, name: str, permutations: Mapping[str, np.ndarray]) -> np.ndarray:
        # similarity[i, j] = Σ over every tensor axis the space lies on of the inner product
        # of A's unit i with B's unit j, B's other axes permuted as they are now.
        size = self.spaces.sizes[name]
        similarity = torch.zeros(size, size, dtype=torch.float64)
        for index, piece in self.places[name]:
            axis = self.spaces.axes[index]
            b = self.b[axis.tensor]
            for other in self.axes_of[axis.tensor]:
                if other != index:
                    moved = self.spaces.axes[other]
                    order = _entry_order(moved, permutations, b.shape[moved.axis], b.device)
                    b = b.index_select(moved.axis, order)
            rows = slice(piece.start, piece.start + piece.size)
            b_units = _unit_rows(b, axis.axis, axis.inner)[rows]  # (size, rest)
            similarity += (self.a_units[index][rows] @ b_units.T).cpu()
        return similarity.numpy()


def _unit_rows(tensor: torch.Tensor, axis: int, inner: int) -> torch.Tensor:
    """(units, everything else): one row per unit of `axis`, its `inner` entries included."""
    moved = tensor.movedim(axis, 0)
    return moved.reshape(moved.shape[0] // inner, -1)


def _entry_order(
    axis: PermutedAxis,
    permutations: Mapping[str, np.ndarray],
    length: int,
    device: torch.device,
) -> torch.Tensor:
    """The indices that reorder `axis` (of `length` entries) by the permutations."""
    units = np.arange(length // axis.inner)
    for piece in axis.pieces:
        units[piece.start : piece.start + piece.size] = piece.start + permutations[piece.space]
    entries = (units[:, None] * axis.inner + np.arange(axis.inner)).reshape(-1)
    return torch.from_numpy(entries).to(device)


def _checked_permutations(
    spaces: UnitSpaces, permutations: Mapping[str, np.ndarray | Sequence[int]]
) -> dict[str, np.ndarray]:
    unknown = sorted(set(permutations) - set(spaces.sizes))
    missing = [name for name in spaces.sizes if name not in permutations]
    if unknown or missing:
        raise AlignmentError(
            f"the permutations do not fit the model's unit spaces: missing {missing or 'none'}, "
            f"unknown {unknown or 'none'}"
        )
    checked = {}
    for name, size in spaces.sizes.items():
        order = np.asarray(permutations[name])
        if order.shape != (size,) or not np.array_equal(np.sort(order), np.arange(size)):
            raise AlignmentError(
                f"the permutation of space {name} is not a permutation of its {size} units"
            )
        checked[name] = order.astype(np.int64)
    return checked


def _require_same_tensors(
    state_a: Mapping[str, torch.Tensor], state_b: Mapping[str, torch.Tensor]
) -> None:
    only_a = [key for key in state_a if key not in state_b]
    only_b = [key for key in state_b if key not in state_a]
    if only_a or only_b:
        raise CheckpointError(
            f"states A and B hold different tensors: only in A {only_a[:4] or 'none'}, only "
            f"in B {only_b[:4] or 'none'}; align two checkpoints of one architecture"
        )
    for key, tensor in state_a.items():
        if tensor.shape != state_b[key].shape:
            raise CheckpointError(
                f"states A and B differ in the shape of {key}: {tuple(tensor.shape)} vs "
                f"{tuple(state_b[key].shape)}; align two checkpoints of one architecture"
            )


def _require_fit(spaces: UnitSpaces, state: Mapping[str, torch.Tensor], which: str) -> None:
    for axis in spaces.axes:
        tensor = state.get(axis.tensor)
        if tensor is None:
            raise CheckpointError(
                f"state {which} lacks {axis.tensor}, which the model uses; pass the whole "
                "state_dict() of the model's architecture"
            )
        units = max(piece.start + piece.size for piece in axis.pieces)
        if tensor.dim() <= axis.axis or tensor.shape[axis.axis] < units * axis.inner:
            raise CheckpointError(
                f"state {which}: {axis.tensor} has shape {tuple(tensor.shape)}, which does "
                "not fit the model"
            )


# ------------------------------------------------------------------------- reading the graph


def _trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as error:  # noqa: BLE001 - tracing user code fails in many ways
        raise AlignmentError(
            f"cannot align {type(model).__name__}: torch.fx cannot trace it "
            f"({type(error).__name__}: {_first_line(error)}); weight matching reads the "
            "unit spaces from the traced graph"
        ) from None


def _propagate_shapes(graph: fx.GraphModule, model: nn.Module, input_shape: tuple) -> None:
    # The traced graph shares the model's modules: eval mode for the probe (BN must not
    # update its running statistics), then every module's own mode back.
    modes = [(module, module.training) for module in model.modules()]
    parameter = next(itertools.chain(model.parameters(), model.buffers()), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else None
    probe = torch.zeros(_PROBE_BATCH, *input_shape, device=device, dtype=dtype)
    try:
        graph.eval()
        # ShapeProp prints the traceback of a failing node itself: the error says it in a line.
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            ShapeProp(graph).propagate(probe)
    except Exception as error:  # noqa: BLE001 - the user's forward, on the probe batch
        cause = error.__cause__ if isinstance(error.__cause__, Exception) else error
        raise AlignmentError(
            f"cannot align {type(model).__name__}: it fails on a batch of shape "
            f"{tuple(probe.shape)} ({type(cause).__name__}: {_first_line(cause)}); pass "
            "the input_shape it takes"
        ) from None
    finally:
        for module, training in modes:
            module.training = training


def _first_line(error: BaseException) -> str:
    return str(error).strip().split("\n")[0]


@dataclass(frozen=True)
class _Layout:
    """What dimension 1 of a traced tensor holds: the units of `spaces` (ids in the forest)
    side by side, each unit `inner` entries wide."""

    spaces: tuple[int, ...]
    inner: int = 1


class _Constant:
    """A tensor that is no function of the input (a get_attr of the module)."""


_CONSTANT = _Constant()
# What a node's value is while the graph is read: a layout for a tensor with units along
# dimension 1, a constant, or None for anything else (sizes, shapes, tuples).
_Value = _Layout | _Constant | None


class _SpaceForest:
    """The unit spaces while the graph is read.

    Union-find over spaces tied by an add (a class of tied spaces is one space in the end),
    and the splitting of a space into consecutive parts where only a part of it is tied to
    another: a zero-padded or concatenated tensor added to a layer's output. A class keeps
    the smallest label (graph-order key, name) of its members, the first layer producing it.
    """

    def __init__(self) -> None:
        self._size: list[int] = []
        self._parent: list[int] = []
        self._fixed: list[bool] = []
        # (graph-order key, name of the layer, offset in its output, whether a part of it)
        self._label: list[tuple[tuple[int, ...], str, int, bool]] = []
        self._parts: dict[int, tuple[int, ...]] = {}

    def new(self, size: int, key: tuple[int, ...], name: str, *, fixed: bool = False) -> int:
        return self._add(size, (key, name, 0, False), fixed)

    def _add(self, size: int, label: tuple[tuple[int, ...], str, int, bool], fixed: bool) -> int:
        self._size.append(size)
        self._parent.append(len(self._parent))
        self._fixed.append(fixed)
        self._label.append(label)
        return len(self._parent) - 1

    def find(self, space: int) -> int:
        root = space
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[space] != root:  # path compression
            self._parent[space], space = root, self._parent[space]
        return root

    def size(self, space: int) -> int:
        return self._size[space]

    def units(self, spaces: Sequence[int]) -> int:
        return sum(self._size[space] for space in spaces)

    def atoms(self, spaces: Sequence[int]) -> list[int]:
        """The unsplit class roots that `spaces` consist of, in order."""
        found: list[int] = []
        for space in spaces:
            root = self.find(space)
            parts = self._parts.get(root)
            found.extend(self.atoms(parts) if parts else (root,))
        return found

    def is_fixed(self, spaces: Sequence[int]) -> bool:
        return all(self._fixed[atom] for atom in self.atoms(spaces))

    def fix(self, spaces: Sequence[int]) -> None:
        for atom in self.atoms(spaces):
            self._fixed[atom] = True

    def name(self, root: int) -> str:
        _, name, offset, part = self._label[root]
        return f"{name}[{offset}:{offset + self._size[root]}]" if part else name

    def key(self, root: int) -> tuple[int, ...]:
        return self._label[root][0]

    def unify(self, first: Sequence[int], second: Sequence[int]) -> None:
        """Tie unit k of `first` to unit k of `second`, for every k (equal unit counts)."""
        assert self.units(first) == self.units(second)
        while True:
            sides = (self.atoms(first), self.atoms(second))
            bounds = {
                bound
                for atoms in sides
                for bound in itertools.accumulate(self._size[atom] for atom in atoms)
            }
            if not self._split_at(sides, bounds):
                break
        assert [self._size[atom] for atom in sides[0]] == [self._size[atom] for atom in sides[1]]
        for one, other in zip(*sides, strict=True):
            self._union(one, other)

    def _split_at(self, sides: tuple[list[int], list[int]], bounds: set[int]) -> bool:
        # Splits the first atom with a bound inside it; the caller re-reads the atoms.
        for atoms in sides:
            start = 0
            for atom in atoms:
                stop = start + self._size[atom]
                inside = sorted(bound - start for bound in bounds if start < bound < stop)
                if inside:
                    self._split(atom, inside)
                    return True
                start = stop
        return False

    def _split(self, root: int, cuts: list[int]) -> None:
        key, name, offset, _ = self._label[root]
        edges = [0, *cuts, self._size[root]]
        self._parts[root] = tuple(
            self._add(stop - start, (key + (index,), name, offset + start, True), self._fixed[root])
            for index, (start, stop) in enumerate(itertools.pairwise(edges))
        )

    def _union(self, one: int, other: int) -> None:
        one, other = self.find(one), self.find(other)
        if one == other:
            return
        assert self._size[one] == self._size[other] and not {one, other} & set(self._parts)
        if self._label[other] < self._label[one]:
            one, other = other, one
        self._parent[other] = one
        self._fixed[one] = self._fixed[one] or self._fixed[other]


_BatchNorm = nn.modules.batchnorm._BatchNorm
_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
# Layers and functions without state whose output unit k depends on input unit k alone:
# activations, dropout (which drops a unit or a channel whole), pooling over space.
_UNIT_WISE_MODULES: tuple[type[nn.Module], ...] = tuple(
    getattr(nn, name)
    for name in (
        "Identity ReLU ReLU6 LeakyReLU ELU SELU CELU GELU SiLU Mish Sigmoid Tanh Hardtanh "
        "Hardswish Hardsigmoid Softplus Dropout Dropout1d Dropout2d Dropout3d AlphaDropout "
        "MaxPool1d MaxPool2d MaxPool3d AvgPool1d AvgPool2d AvgPool3d AdaptiveAvgPool1d "
        "AdaptiveAvgPool2d AdaptiveAvgPool3d AdaptiveMaxPool1d AdaptiveMaxPool2d AdaptiveMaxPool3d"
    ).split()
)
_UNIT_WISE_FUNCTIONS: frozenset[Callable[..., Any]] = frozenset(
    {torch.relu, torch.sigmoid, torch.tanh}
    | {
        getattr(F, name)
        for name in (
            "relu relu6 leaky_relu elu selu celu gelu silu mish hardtanh hardswish hardsigmoid "
            "softplus sigmoid tanh dropout dropout1d dropout2d dropout3d alpha_dropout "
            "max_pool1d max_pool2d max_pool3d avg_pool1d avg_pool2d avg_pool3d "
            "adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d "
            "adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d"
        ).split()
    }
)
_UNIT_WISE_METHODS = frozenset(
    {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "contiguous", "clone"}
)
_ELEMENTWISE_FUNCTIONS: frozenset[Callable[..., Any]] = frozenset(
    (operator.add, operator.iadd, torch.add, operator.sub, operator.isub, torch.sub)
    + (operator.mul, operator.imul, torch.mul, operator.truediv, operator.itruediv, torch.div)
)
_ELEMENTWISE_METHODS = frozenset({"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"})
_REDUCTIONS: frozenset[Callable[..., Any] | str] = frozenset({torch.mean, torch.sum, "mean", "sum"})
_RESHAPES: frozenset[Callable[..., Any] | str] = frozenset({torch.reshape, "view", "reshape"})
# Nodes whose value is no tensor: sizes and shapes, used by reshapes.
_NOT_TENSORS: frozenset[Callable[..., Any] | str] = frozenset({getattr, "size", "dim"})


class _GraphReader:
    """One pass over the traced graph, node by node, placing each tensor's units."""

    def __init__(self, graph: fx.GraphModule, model_name: str) -> None:
        self.graph = graph
        self.model_name = model_name
        self.forest = _SpaceForest()
        self.values: dict[fx.Node, _Value] = {}
        # (state key, axis) -> the layout along it; a tensor used twice ties both layouts.
        self.roles: dict[tuple[str, int], _Layout] = {}
        self.produced: dict[str, int] = {}  # layer -> the space it produces (one per layer)
        self.position = 0  # the node's index in the graph: the order of the spaces' names

    def read(self) -> UnitSpaces:
        for position, node in enumerate(self.graph.graph.nodes):
            self.position = position
            value = self._place(node)
            if isinstance(value, _Layout):
                self._check_width(node, value)
            elif value is None and node.op != "output" and _shape(node) is not None:
                self._refuse(node, "a tensor whose units it cannot follow")
            self.values[node] = value
        return self._unit_spaces()

    # --------------------------------------------------------------- one node

    def _place(self, node: fx.Node) -> _Value:
        if node.op == "placeholder":
            shape = _shape(node)
            if shape is None:
                return None
            if len(shape) < 2:
                self._refuse(node, "an input without a batch and a channel dimension")
            return _Layout((self.forest.new(shape[1], (-1,), "input", fixed=True),))
        if node.op == "get_attr":
            return _CONSTANT
        if node.op == "call_module":
            return self._layer(node, self.graph.get_submodule(str(node.target)))
        if node.op in ("call_function", "call_method"):
            return self._operation(node)
        assert node.op == "output"
        result = node.args[0]
        layout = self.values.get(result) if isinstance(result, fx.Node) else None
        if not isinstance(layout, _Layout):
            self._refuse(node, "the model returns something other than one tensor")
        self.forest.fix(layout.spaces)  # the logits keep their order
        return None

    def _layer(self, node: fx.Node, module: nn.Module) -> _Value:
        name = str(node.target)
        if isinstance(module, _UNIT_WISE_MODULES):
            return self._carried(node)
        if isinstance(module, nn.Flatten):
            return self._flattened(node, module.start_dim, module.end_dim)
        source = self._input(node)
        if isinstance(module, _CONVOLUTIONS):
            if module.groups != 1:
                self._refuse(node, f"a convolution in {module.groups} groups")
            if source.inner != 1:
                self._refuse(node, "a convolution of flattened features")
            self._record(f"{name}.weight", 1, source)
            return self._output_of(name, module.out_channels, module.bias is not None)
        if isinstance(module, nn.Linear):
            if len(_shape(node.args[0]) or ()) != 2:
                self._refuse(node, "a linear layer on an input that is not (N, features)")
            self._record(f"{name}.weight", 1, source)
            return self._output_of(name, module.out_features, module.bias is not None)
        if isinstance(module, _BatchNorm):
            entries = ["weight", "bias"] if module.affine else []
            if module.track_running_stats:
                entries += ["running_mean", "running_var"]
            for entry in entries:
                self._record(f"{name}.{entry}", 0, source)
            return source
        self._refuse(node, "a layer it does not know")

    def _output_of(self, name: str, size: int, has_bias: bool) -> _Layout:
        if name not in self.produced:
            self.produced[name] = self.forest.new(size, (self.position,), name)
        output = _Layout((self.produced[name],))
        self._record(f"{name}.weight", 0, output)
        if has_bias:
            self._record(f"{name}.bias", 0, output)
        return output

    def _operation(self, node: fx.Node) -> _Value:
        target = node.target
        method = node.op == "call_method"
        if target in (_UNIT_WISE_METHODS if method else _UNIT_WISE_FUNCTIONS):
            return self._carried(node)
        if target in (_ELEMENTWISE_METHODS if method else _ELEMENTWISE_FUNCTIONS):
            return self._elementwise(node)
        if target in _NOT_TENSORS:
            return None
        if target == "flatten" or target is torch.flatten:
            start = _argument(node, 1, "start_dim", 0)
            return self._flattened(node, start, _argument(node, 2, "end_dim", -1))
        if target in _RESHAPES:
            return self._reshaped(node)
        if target in _REDUCTIONS:
            return self._reduced(node)
        if target is operator.getitem:
            return self._indexed(node)
        if target is F.pad:
            return self._padded(node)
        if target in (torch.cat, torch.concat):
            return self._concatenated(node)
        self._refuse(node, "an operation it does not know")

    def _carried(self, node: fx.Node) -> _Value:
        """A unit-wise operation: the output's units are the input's."""
        value = self._value(node.args[0]) if node.args else None
        if isinstance(value, _Constant):
            return value
        if not isinstance(_meta(node), TensorMetadata):
            self._refuse(node, "a unit-wise operation that returns more than a tensor")
        return self._input(node)

    def _elementwise(self, node: fx.Node) -> _Value:
        """+, −, ×, ÷: two tensors tie their units; a constant must not vary by unit."""
        operands = [arg for arg in node.args[:2] if isinstance(arg, fx.Node)]
        layouts = [arg for arg in operands if isinstance(self._value(arg), _Layout)]
        constants = [arg for arg in operands if isinstance(self._value(arg), _Constant)]
        if not layouts:
            return _CONSTANT if constants else None
        output = _shape(node)
        if any(len(_shape(arg) or ()) != len(output or ()) for arg in layouts):
            self._refuse(node, "an elementwise operation of tensors of different ranks")
        # A tensor one unit wide broadcasts across the other's units: it ties none of them.
        wide = [arg for arg in layouts if (_shape(arg) or (0, 0))[1] != 1] or layouts[:1]
        result = self._layout(wide[0])
        if len(wide) == 2:
            other = self._layout(wide[1])
            if result.inner != other.inner or _shape(wide[0])[1] != _shape(wide[1])[1]:  # type: ignore[index]
                self._refuse(node, "an elementwise operation of differently laid out units")
            self.forest.unify(result.spaces, other.spaces)
        for constant in constants:
            varies = _channel_width(_shape(constant), output) > 1
            if varies and not self.forest.is_fixed(result.spaces):
                self._refuse(node, "a constant tensor that differs from unit to unit")
        return result

    def _flattened(self, node: fx.Node, start: int, end: int) -> _Value:
        source = self._input(node)
        shape = _shape(node.args[0])
        assert shape is not None
        if _dimension(start, len(shape)) != 1 or _dimension(end, len(shape)) != len(shape) - 1:
            self._refuse(node, "a flatten other than of every dimension after the batch")
        return _Layout(source.spaces, source.inner * _product(shape[2:]))

    def _reshaped(self, node: fx.Node) -> _Value:
        # view/reshape to (N, -1) is flatten(1); most other shapes mix units with the rest.
        source = self._input(node)
        before, after = _shape(node.args[0]), _shape(node)
        assert before is not None and after is not None
        if after == before:
            return source
        if len(after) == 2 and after[0] == before[0] and after[1] == _product(before[1:]):
            return _Layout(source.spaces, source.inner * _product(before[2:]))
        if after[:2] == before[:2] and all(size == 1 for size in after[2:] + before[2:]):
            return source  # (N, C) to (N, C, 1, 1) and back: the units stay where they are
        self._refuse(node, f"a reshape from {before} to {after}")

    def _reduced(self, node: fx.Node) -> _Value:
        source = self._input(node)
        shape = _shape(node.args[0])
        assert shape is not None
        dims = _argument(node, 1, "dim", None)
        dims = (dims,) if isinstance(dims, int) else dims
        if not isinstance(dims, tuple | list) or not dims:
            self._refuse(node, "a reduction over the units")
        if any(_dimension(dim, len(shape)) < 2 for dim in dims):
            self._refuse(node, "a reduction over the batch or the units")
        return source

    def _indexed(self, node: fx.Node) -> _Value:
        value = self._value(node.args[0])
        if not isinstance(value, _Layout):
            return value  # a shape's entry, a constant's slice
        index = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
        whole = slice(None)
        keeps_units = (
            all(entry == whole for entry in index[:2])
            and all(isinstance(entry, slice) or entry is Ellipsis for entry in index[2:])
            and not any(entry is Ellipsis for entry in index[:2])
        )
        if not keeps_units:
            self._refuse(node, "indexing that selects units")
        return value

    def _padded(self, node: fx.Node) -> _Value:
        # F.pad lists (before, after) pairs from the last dimension; dimension 1's pair is
        # number ndim − 2. Padded channels hold one constant, so any order among them is
        # the same: each side's channels are a space of their own.
        source = self._input(node)
        shape = _shape(node.args[0])
        assert shape is not None
        pad = list(_argument(node, 1, "pad", ()))
        mode = _argument(node, 2, "mode", "constant")
        pad += [0] * (2 * len(shape) - len(pad))
        pairs = [(pad[index], pad[index + 1]) for index in range(0, len(pad), 2)]
        batch, channels = pairs[len(shape) - 1], pairs[len(shape) - 2]
        if not all(isinstance(amount, int) for amount in pad) or any(batch):
            self._refuse(node, "padding of the batch, or by amounts known only at run time")
        if not any(channels):
            return source
        if mode != "constant" or min(channels) < 0 or source.inner != 1:
            self._refuse(node, f"{mode} padding or cropping of the channels")
        before, after = channels
        where = self._module_path(node) or node.name
        units = self.forest.units(source.spaces)
        spaces = list(source.spaces)
        if before:
            spaces.insert(0, self.forest.new(before, (self.position, 0), f"{where}[0:{before}]"))
        if after:
            name = f"{where}[{before + units}:{before + units + after}]"
            spaces.append(self.forest.new(after, (self.position, 1), name))
        return _Layout(tuple(spaces))

    def _concatenated(self, node: fx.Node) -> _Value:
        tensors = _argument(node, 0, "tensors", ())
        output = _shape(node)
        assert output is not None
        if _dimension(_argument(node, 1, "dim", 0), len(output)) != 1:
            self._refuse(node, "a concatenation along another dimension than the units")
        layouts = [self._layout_or_refuse(node, tensor) for tensor in tensors]
        if len({layout.inner for layout in layouts}) != 1:
            self._refuse(node, "a concatenation of differently flattened units")
        return _Layout(
            tuple(itertools.chain(*(layout.spaces for layout in layouts))), layouts[0].inner
        )

    # --------------------------------------------------------------- helpers

    def _record(self, tensor: str, axis: int, layout: _Layout) -> None:
        known = self.roles.get((tensor, axis))
        if known is None:
            self.roles[tensor, axis] = layout
        elif known != layout:  # a layer called twice: both calls see the same units
            if known.inner != layout.inner:
                raise AlignmentError(
                    f"cannot align {self.model_name}: {tensor} is used on two differently "
                    "laid out inputs"
                )
            self.forest.unify(known.spaces, layout.spaces)

    def _value(self, arg: object) -> _Value:
        return self.values.get(arg) if isinstance(arg, fx.Node) else None

    def _layout(self, arg: fx.Node) -> _Layout:
        value = self.values[arg]
        assert isinstance(value, _Layout)
        return value

    def _input(self, node: fx.Node) -> _Layout:
        return self._layout_or_refuse(node, node.args[0] if node.args else None)

    def _layout_or_refuse(self, node: fx.Node, arg: object) -> _Layout:
        value = self._value(arg)
        if not isinstance(value, _Layout):
            self._refuse(node, "an input that is not a tensor of the network's units")
        return value

    def _check_width(self, node: fx.Node, layout: _Layout) -> None:
        # Every placed tensor's dimension 1 must be as wide as the units traced to it; a
        # mismatch means an operation changed the layout without being told apart.
        shape = _shape(node)
        traced = self.forest.units(layout.spaces) * layout.inner
        if shape is None or len(shape) < 2 or shape[1] != traced:
            self._refuse(node, f"an output of shape {shape} where {traced} units were traced")

    def _module_path(self, node: fx.Node) -> str:
        stack = node.meta.get("nn_module_stack") or {}
        return next(reversed(stack.values()))[0] if stack else ""

    def _refuse(self, node: fx.Node, what: str) -> NoReturn:
        if node.op == "call_module":
            module = self.graph.get_submodule(str(node.target))
            where = f"layer '{node.target}' ({type(module).__name__})"
        else:
            target = node.target
            operation = target if isinstance(target, str) else getattr(target, "__name__", target)
            path = self._module_path(node)
            where = f"node '{node.name}' ({operation}{' in ' + path if path else ''})"
        raise AlignmentError(
            f"cannot align {self.model_name}: cannot place {where} in a permutation of units "
            f"({what}); weight matching places {_PLACED}"
        )

    def _unit_spaces(self) -> UnitSpaces:
        axes: list[tuple[str, int, list[tuple[int, int, int]], int]] = []
        roots: set[int] = set()
        for (tensor, axis), layout in self.roles.items():
            pieces, start = [], 0
            for atom in self.forest.atoms(layout.spaces):
                size = self.forest.size(atom)
                if not self.forest.is_fixed((atom,)):
                    pieces.append((atom, start, size))
                    roots.add(atom)
                start += size
            if pieces:
                axes.append((tensor, axis, pieces, layout.inner))
        ordered = sorted(roots, key=self.forest.key)
        names: dict[int, str] = {}
        for root in ordered:
            name = self.forest.name(root)
            while name in names.values():  # never expected: every layer has one name
                name += "'"
            names[root] = name
        return UnitSpaces(
            sizes={names[root]: self.forest.size(root) for root in ordered},
            axes=tuple(
                PermutedAxis(
                    tensor,
                    axis,
                    tuple(Piece(names[root], start, size) for root, start, size in pieces),
                    inner,
                )
                for tensor, axis, pieces, inner in axes
            ),
        )


def _meta(node: object) -> object:
    return node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None


def _shape(node: object) -> tuple[int, ...] | None:
    meta = _meta(node)
    if isinstance(meta, TensorMetadata):
        return tuple(meta.shape)
    return None


def _argument(node: fx.Node, position: int, keyword: str, default: Any) -> Any:
    if len(node.args) > position:
        return node.args[position]
    return node.kwargs.get(keyword, default)


def _dimension(dim: int, ndim: int) -> int:
    return dim + ndim if dim < 0 else dim


def _product(sizes: Sequence[int]) -> int:
    product = 1
    for size in sizes:
        product *= size
    return product


def _channel_width(constant: tuple[int, ...] | None, output: tuple[int, ...] | None) -> int:
    """How many distinct values a broadcast constant has along the output's dimension 1."""
    if constant is None or output is None:
        return 1
    offset = len(output) - len(constant)  # broadcasting aligns the trailing dimensions
    return constant[1 - offset] if 0 <= 1 - offset < len(constant) else 1
