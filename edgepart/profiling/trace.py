"""Trace a model with torch.fx into partitionable units.

A *unit* is a set of fx nodes that produces one tensor (or one bundle of tensors, see below) and
that a plan may place on a device of its own; it becomes one ``layer`` of an instance. The trace is
made for one fixed input shape and the graph module is *specialised* to it:

* every node whose value is not a tensor (``x.shape``, ``x.size(0)``, ``h // 16``, the ``bool`` and
  ``torch._assert`` of a shape check, ...) is replaced by the constant it computed for that shape,
  so no unit ever has to ship a Python int to another device; a Python value computed from
  tensor *data* (``x.max().item()``) is refused, as folding it would change the model;
* modules that are the identity in eval mode (``nn.Identity``, ``nn.Dropout*``) are removed;
* dead code is eliminated.

Units at *module* granularity: every remaining ``call_module``/``call_function``/``call_method``
node is a unit (for torchvision's resnet50: 53 convs, 53 batch norms, 49 ReLUs, 16 adds, 2 pools,
a flatten and the classifier), except that

* a ``getitem`` that unpacks a tuple joins the unit that produced the tuple (so
  ``out, _ = attention(x)`` is one unit); a unit whose values leave it through several getitems
  ships them together as one bundle whose size is their sum;
* a unit that reads no tensor from another unit or the input (a ``get_attr`` of a parameter such
  as ViT's ``class_token``, and ops on it alone, like its ``expand``) joins the unit that uses it;
  one used by several units stays a unit of its own and, having no in-edge, counts as a reader
  of the request input (a small overestimate of transfers; no torchvision model has one).

The placeholder (the request input) belongs to no unit: units that read it consume the request
input. If a unit reads both the input and another unit's output (``x + f(x)`` at the top of the
model), the input would not be representable, so an extra unit named after the placeholder, which
covers just the placeholder node, forwards the input to all its readers.

Split shapes. :func:`unit_shape` describes a one-node unit that a device group can split (the
``meta.shape`` of a layer, read by :mod:`edgepart.cost`): conv, pool (adaptive pools whose output
divides their input), linear, or elementwise (activations, batch norm, flatten, whose output keeps
the layout of its input), with input and output ``[C, H, W]`` per request (the batch dimension
dropped; a ``(N, F)`` tensor is ``[F, 1, 1]``), kernel (dilated extent), stride, padding and
groups. Any other unit gets no shape and can only run whole on one device or replicated.

Unit ids are fx node names (the anchor node), so they map back to the graph module; ``Unit.nodes``
lists every fx node of the unit and the units partition the graph's nodes (placeholder and output
excepted), which is what the runtime needs to split the :class:`torch.fx.GraphModule`.
"""

from __future__ import annotations

import heapq
import inspect
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import torch
from torch import fx, nn

from edgepart.errors import InputError
from edgepart.profiling.model_spec import build_model, first_line

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["Group", "TracedModel", "Unit", "assemble_units", "example_input", "trace_model",
           "unit_shape"]

_IDENTITY_IN_EVAL = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                     nn.AlphaDropout, nn.FeatureAlphaDropout)
_CONSTANT_TYPES = (int, float, bool, str, type(None), torch.dtype, torch.device, slice,
                   type(Ellipsis))
_METADATA_ATTRS = frozenset({"shape", "dtype", "device", "ndim"})
_METADATA_METHODS = frozenset({"size", "dim", "ndimension", "numel"})


@dataclass(frozen=True, slots=True)
class Unit:
    """One partitionable unit: ``nodes`` (fx node names, graph order) produce ``outputs``."""

    id: str
    op: str
    nodes: tuple[str, ...]
    outputs: tuple[str, ...]
    members: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Group:
    """A unit before its outputs and order are known: an id, an op and its fx node names."""

    id: str
    op: str
    nodes: tuple[str, ...]
    members: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TracedModel:
    """A traced, shape-specialised model and its units in a topological order.

    ``value_bytes`` maps every fx node that produces a tensor (or a tuple of tensors) to its size
    in bytes; ``aliases`` are the getitems that unpack a tuple (their bytes are already the
    tuple's) and the get_attrs (parameters, not activations); ``edges`` are ``(producer unit id,
    consumer unit id)`` pairs.
    """

    name: str
    graph_module: fx.GraphModule
    input_shape: tuple[int, ...]
    input_node: str
    units: tuple[Unit, ...]
    edges: tuple[tuple[str, str], ...]
    value_bytes: Mapping[str, int]
    aliases: frozenset[str] = frozenset()
    granularity: str = "module"
    value_shapes: Mapping[str, tuple[int, ...]] = field(
        default_factory=lambda: MappingProxyType({}))
    """fx node name -> shape of the tensor it produces (tensor-valued nodes only)."""

    @property
    def unit_nodes(self) -> dict[str, tuple[str, ...]]:
        """Unit id -> the fx node names it covers (what the runtime splits the graph by)."""
        return {unit.id: unit.nodes for unit in self.units}


def example_input(shape: Sequence[int]) -> torch.Tensor:
    """The input tensor every profiling step uses (fixed seed: values never matter, shapes do)."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(tuple(shape), generator=generator)


def trace_model(
    model: nn.Module | str,
    input_shape: Sequence[int],
    *,
    model_kwargs: Mapping[str, Any] | None = None,
) -> TracedModel:
    """Trace ``model`` (a module or a model spec) at module granularity for ``input_shape``."""
    name = model if isinstance(model, str) else type(model).__name__
    module = build_model(model, model_kwargs) if isinstance(model, str) else model.eval()
    shape = tuple(int(d) for d in input_shape)
    gm = _symbolic_trace(module, name)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise InputError(f"model: {name} must take exactly one tensor input, "
                         f"got {len(placeholders)} inputs without defaults")
    kinds, shapes = _propagate(gm, shape, name)
    _specialise(gm, kinds)
    value_bytes = {n: k[1] for n, k in kinds.items() if k[0] != "const" and n in _names(gm)}
    groups = _module_groups(gm, kinds)
    units, edges = assemble_units(gm, groups)
    aliases = frozenset(n.name for n in gm.graph.nodes
                        if n.op == "get_attr" or _unpacks_tuple(n, kinds))
    return TracedModel(name=name, graph_module=gm, input_shape=shape,
                       input_node=placeholders[0].name, units=units, edges=edges,
                       value_bytes=MappingProxyType(value_bytes), aliases=aliases,
                       value_shapes=MappingProxyType(shapes))


def _symbolic_trace(module: nn.Module, name: str) -> fx.GraphModule:
    concrete = {
        p.name: p.default
        for i, p in enumerate(inspect.signature(module.forward).parameters.values())
        if i > 0 and p.default is not inspect.Parameter.empty
    }
    try:
        return fx.symbolic_trace(module, concrete_args=concrete or None)
    except Exception as err:  # fx raises many types (TraceError, TypeError, NotImplementedError)
        raise InputError(f"model: torch.fx cannot trace {name}: {first_line(err)}") from None


# A node's value kind: ("tensor", nbytes), ("tensors", nbytes) for a tuple/list of tensors,
# or ("const", value) for anything constant-foldable.
Kind = tuple[str, Any]


def _propagate(gm: fx.GraphModule, shape: tuple[int, ...], name: str
               ) -> tuple[dict[str, Kind], dict[str, tuple[int, ...]]]:
    """Run the model once on the example input; classify every node's value and keep the shape
    of every tensor."""
    kinds: dict[str, Kind] = {}
    shapes: dict[str, tuple[int, ...]] = {}

    class _Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            value = super().run_node(n)
            kinds[n.name] = _kind(n.name, value)
            if isinstance(value, torch.Tensor):
                shapes[n.name] = tuple(value.shape)
            return value

    try:
        with torch.no_grad():
            _Recorder(gm).run(example_input(shape))
    except InputError:
        raise
    except Exception as err:  # a forward failure of any type means this shape does not fit
        shape_text = ",".join(map(str, shape))
        raise InputError(
            f"--input-shape {shape_text}: the forward pass of {name} failed: {first_line(err)}"
        ) from None
    return kinds, shapes


def _kind(node_name: str, value: Any) -> Kind:
    if isinstance(value, torch.Tensor):
        return ("tensor", _nbytes(value))
    if (isinstance(value, (tuple, list)) and any(isinstance(v, torch.Tensor) for v in value)
            and all(isinstance(v, torch.Tensor) or v is None for v in value)):
        return ("tensors", sum(_nbytes(v) for v in value if v is not None))
    if _is_constant(value):
        return ("const", value)
    raise InputError(f"model: node {node_name!r} produces a {type(value).__name__}; only "
                     "tensors, tuples of tensors and constants can be placed")


def _is_constant(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_is_constant(v) for v in value)
    return isinstance(value, _CONSTANT_TYPES)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _specialise(gm: fx.GraphModule, kinds: Mapping[str, Kind]) -> None:
    """Fold constants, drop eval-mode identities and dead code (see the module docstring)."""
    graph = gm.graph
    modules = dict(gm.named_modules())
    shape_only: set[str] = set()
    for node in list(graph.nodes):
        if node.op in ("placeholder", "output"):
            continue
        if kinds[node.name][0] == "const":
            _check_shape_only(node, kinds, shape_only)
            _replace_with_constant(node, kinds[node.name][1])
        elif node.op == "call_module" and isinstance(modules[node.target], _IDENTITY_IN_EVAL):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    graph.eliminate_dead_code()
    graph.lint()
    gm.recompile()


def _check_shape_only(node: fx.Node, kinds: Mapping[str, Kind], shape_only: set[str]) -> None:
    """A constant may be folded only if it comes from shapes (or is a ``None`` slot of a
    tuple of tensors), never from tensor values."""
    reads_metadata = (
        (node.op == "call_function" and node.target is getattr
         and node.args[1] in _METADATA_ATTRS)
        or (node.op == "call_method" and node.target in _METADATA_METHODS)
        or _unpacks_tuple(node, kinds)
    )
    inputs = node.all_input_nodes
    if reads_metadata or all(n.name in shape_only for n in inputs):
        shape_only.add(node.name)
        return
    raise InputError(f"model: node {node.name!r} computes a Python value from tensor data "
                     f"({node.target!r}); only shapes can be specialised to constants")


def _replace_with_constant(node: fx.Node, value: Any) -> None:
    def swap(arg: fx.Node) -> Any:
        return value if arg is node else arg

    for user in list(node.users):
        user.args = fx.node.map_arg(user.args, swap)
        user.kwargs = fx.node.map_arg(user.kwargs, swap)
    node.graph.erase_node(node)


def _names(gm: fx.GraphModule) -> set[str]:
    return {n.name for n in gm.graph.nodes}


def _module_groups(gm: fx.GraphModule, kinds: Mapping[str, Kind]) -> list[Group]:
    """One group per compute node, with tuple getitems and input-free groups attached."""
    members: dict[str, list[str]] = {}
    anchor_of: dict[str, str] = {}
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        if _unpacks_tuple(node, kinds):
            anchor_of[node.name] = anchor_of[node.args[0].name]
        else:
            anchor_of[node.name] = node.name
            members[node.name] = []
        members[anchor_of[node.name]].append(node.name)
    _attach_input_free(gm, members, anchor_of)
    nodes = {n.name: n for n in gm.graph.nodes}
    return [Group(a, _op_name(gm, nodes[a]), tuple(ns)) for a, ns in members.items()]


def _attach_input_free(
    gm: fx.GraphModule, members: dict[str, list[str]], anchor_of: dict[str, str]
) -> None:
    """Merge each group that reads no tensor from outside itself into its only consumer group."""
    nodes = {n.name: n for n in gm.graph.nodes}
    for anchor in list(members):  # graph order: producers before consumers
        names = members[anchor]
        reads = {src.name for n in names for src in nodes[n].all_input_nodes} - set(names)
        consumers = {anchor_of.get(u.name) for n in names for u in nodes[n].users} - {anchor}
        if reads or len(consumers) != 1 or None in consumers:
            continue
        target = str(consumers.pop())
        members[target] = names + members[target]
        anchor_of.update(dict.fromkeys(names, target))
        del members[anchor]


def _unpacks_tuple(node: fx.Node, kinds: Mapping[str, Kind]) -> bool:
    return (node.op == "call_function" and node.target is operator.getitem
            and isinstance(node.args[0], fx.Node) and kinds[node.args[0].name][0] == "tensors")


def _op_name(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        return type(gm.get_submodule(str(node.target))).__name__.lower()
    if node.op == "call_method" or node.op == "get_attr":
        return str(node.target) if node.op == "call_method" else "get_attr"
    return str(getattr(node.target, "__name__", node.target))


def assemble_units(
    gm: fx.GraphModule, groups: Sequence[Group]
) -> tuple[tuple[Unit, ...], tuple[tuple[str, str], ...]]:
    """Turn groups of fx nodes into units in a topological order, and the edges between them."""
    index = {n.name: i for i, n in enumerate(gm.graph.nodes)}
    placeholder = next(n for n in gm.graph.nodes if n.op == "placeholder")
    groups = _with_input_group(gm, groups, placeholder)
    group_of = {name: g.id for g in groups for name in g.nodes}
    edges = sorted({(group_of[src.name], group_of[dst])
                    for dst, src in _node_inputs(gm) if src.name in group_of
                    and group_of[src.name] != group_of[dst]})
    outputs = _group_outputs(gm, group_of)
    order = _topological(groups, edges, lambda g: min(index[n] for n in g.nodes))
    units = tuple(
        Unit(g.id, g.op, tuple(sorted(g.nodes, key=index.__getitem__)),
             tuple(sorted(outputs[g.id], key=index.__getitem__)), g.members)
        for g in order
    )
    return units, tuple(edges)


def _with_input_group(
    gm: fx.GraphModule, groups: Sequence[Group], placeholder: fx.Node
) -> list[Group]:
    """Add a unit for the placeholder when a reader of the input also reads another unit."""
    group_of = {name: g.id for g in groups for name in g.nodes}
    if placeholder.name in group_of:
        return list(groups)
    readers = {group_of[u.name] for u in placeholder.users if u.op != "output"}
    mixed = any(
        src.name != placeholder.name and group_of.get(src.name) not in (None, group_of[dst])
        for dst, src in _node_inputs(gm) if group_of.get(dst) in readers
    )
    if not mixed:
        return list(groups)
    return [Group(placeholder.name, "input", (placeholder.name,)), *groups]


def _node_inputs(gm: fx.GraphModule) -> Iterator[tuple[str, fx.Node]]:
    for node in gm.graph.nodes:
        if node.op != "output":
            for src in node.all_input_nodes:
                yield node.name, src


def _group_outputs(gm: fx.GraphModule, group_of: Mapping[str, str]) -> dict[str, set[str]]:
    outputs: dict[str, set[str]] = {g: set() for g in group_of.values()}
    nodes = {n.name: n for n in gm.graph.nodes}
    for name, group in group_of.items():
        users = {group_of.get(u.name, "<output>") for u in nodes[name].users}
        if users - {group}:
            outputs[group].add(name)
        if "<output>" in users and len(users - {group, "<output>"}) > 0:
            raise InputError(f"model: {name!r} is a model output and also feeds other units; "
                             "edgepart needs model outputs to be final")
    return outputs


def _topological(
    groups: Sequence[Group], edges: Sequence[tuple[str, str]], key: Callable[[Group], int]
) -> list[Group]:
    """Kahn's algorithm, always taking the ready group that starts earliest in the fx graph."""
    by_id = {g.id: g for g in groups}
    indegree = {g.id: 0 for g in groups}
    succ: dict[str, list[str]] = {g.id: [] for g in groups}
    for src, dst in edges:
        indegree[dst] += 1
        succ[src].append(dst)
    ready = [(key(g), g.id) for g in groups if indegree[g.id] == 0]
    heapq.heapify(ready)
    order: list[Group] = []
    while ready:
        _, gid = heapq.heappop(ready)
        order.append(by_id[gid])
        for nxt in succ[gid]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                heapq.heappush(ready, (key(by_id[nxt]), nxt))
    if len(order) != len(groups):
        raise InputError("model: the units form a cycle (a unit both feeds and reads another)")
    return order


_ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid,
                        nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.BatchNorm2d, nn.BatchNorm1d,
                        nn.Flatten)
_ELEMENTWISE_FUNCTIONS = frozenset({"relu", "relu6", "gelu", "silu", "hardswish", "sigmoid",
                                    "tanh", "flatten"})


def unit_shape(traced: TracedModel, unit: Unit) -> dict[str, Any] | None:
    """The split shape of a one-node unit (see the module docstring), or ``None``."""
    if len(unit.nodes) != 1:
        return None
    node = next(n for n in traced.graph_module.graph.nodes if n.name == unit.nodes[0])
    inputs = [a for a in node.all_input_nodes if a.name in traced.value_shapes]
    if len(inputs) != 1 or node.name not in traced.value_shapes:
        return None
    inp = _per_request(traced.value_shapes[inputs[0].name])
    out = _per_request(traced.value_shapes[node.name])
    if inp is None or out is None:
        return None
    module = traced.graph_module.get_submodule(str(node.target)) if node.op == "call_module" \
        else None
    window = _window(module, inp, out)
    if window is not None:
        return {"in": list(inp), "out": list(out), **window}
    if isinstance(module, nn.Linear) and out[1:] == (1, 1):
        return {"kind": "linear", "in": list(inp), "out": list(out)}
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    if isinstance(module, _ELEMENTWISE_MODULES) or (
            module is None and str(name) in _ELEMENTWISE_FUNCTIONS):
        same = inp == out or (math.prod(inp) == math.prod(out) and out[1:] == (1, 1))
        return {"kind": "elementwise", "in": list(inp), "out": list(inp)} if same else None
    return None


def _per_request(shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    """``(N, C, H, W)`` -> ``(C, H, W)``; ``(N, F)`` -> ``(F, 1, 1)``; anything else ``None``."""
    if len(shape) == 4:
        return shape[1], shape[2], shape[3]
    if len(shape) == 2:
        return shape[1], 1, 1
    return None


def _pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _window(module: nn.Module | None, inp: tuple[int, int, int], out: tuple[int, int, int]
            ) -> dict[str, Any] | None:
    """Kernel (dilated extent), stride, padding and groups of a conv or pool module."""
    if isinstance(module, nn.Conv2d) and not isinstance(module.padding, str):
        kernel, dilation = _pair(module.kernel_size), _pair(module.dilation)
        return {"kind": "conv", "groups": module.groups,
                "kernel": [dilation[i] * (kernel[i] - 1) + 1 for i in range(2)],
                "stride": list(_pair(module.stride)), "padding": list(_pair(module.padding))}
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        kernel = _pair(module.kernel_size)
        dilation = _pair(getattr(module, "dilation", 1))
        return {"kind": "pool", "kernel": [dilation[i] * (kernel[i] - 1) + 1 for i in range(2)],
                "stride": list(_pair(module.stride or module.kernel_size)),
                "padding": list(_pair(module.padding))}
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and all(
            inp[i] % out[i] == 0 for i in (1, 2)):
        ratio = [inp[1] // out[1], inp[2] // out[2]]
        return {"kind": "pool", "kernel": ratio, "stride": ratio, "padding": [0, 0]}
    return None
