"""Model specs: the text that names a model to profile.

Two forms are accepted:

* ``torchvision:NAME``: ``torchvision.models.get_model(NAME, weights=None, **kwargs)``; nothing is
  downloaded, the weights are random, drawn from a fixed seed (profiling needs shapes, not
  trained values; a profile and a run of one spec draw the same ones);
* ``package.module:factory``: imports ``package.module`` and calls ``factory(**kwargs)``, which must
  return a ``torch.nn.Module`` (a class is a factory too).

Every failure is an :class:`~edgepart.errors.InputError` with a one-line message.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from edgepart.errors import InputError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["build_model", "first_line", "parse_input_shape", "parse_model_args"]


def build_model(spec: str, kwargs: Mapping[str, Any] | None = None, seed: int = 0) -> nn.Module:
    """Build the model named by ``spec`` in eval mode, its random weights drawn from ``seed`` (so
    a profile and a run of one spec compute with the same weights; torch's global random state
    is left as it was)."""
    from torch import nn

    from edgepart.profiling.numerics import seeded

    prefix, sep, name = spec.partition(":")
    if not sep or not prefix or not name:
        raise InputError(
            f"model: expected 'torchvision:NAME' or 'package.module:factory', got {spec!r}"
        )
    args = dict(kwargs or {})
    with seeded(seed):
        if prefix == "torchvision":
            model = _torchvision_model(name, args)
        else:
            model = _call_factory(prefix, name, args)
    if not isinstance(model, nn.Module):
        raise InputError(f"model: {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model.eval()


def _torchvision_model(name: str, kwargs: dict[str, Any]) -> Any:
    import torchvision

    known = torchvision.models.list_models()
    if name not in known:
        raise InputError(
            f"model: unknown torchvision model {name!r} (see torchvision.models.list_models())"
        )
    try:
        return torchvision.models.get_model(name, weights=None, **kwargs)
    except (TypeError, ValueError) as err:
        raise InputError(f"model: torchvision:{name}: {first_line(err)}") from None


def _call_factory(module_name: str, attr: str, kwargs: dict[str, Any]) -> Any:
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise InputError(f"model: cannot import {module_name!r}: {first_line(err)}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise InputError(f"model: {module_name!r} has no callable {attr!r}")
    try:
        return factory(**kwargs)
    except (TypeError, ValueError) as err:
        raise InputError(f"model: {module_name}:{attr}: {first_line(err)}") from None


def parse_input_shape(text: str, batch_size: int | None = None) -> tuple[int, ...]:
    """Parse ``"1,3,224,224"``; ``batch_size`` replaces the first dimension."""
    parts = [p.strip() for p in text.split(",")]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise InputError(
            f"--input-shape: expected comma-separated integers like 1,3,224,224, got {text!r}"
        ) from None
    if not shape or any(d <= 0 for d in shape):
        raise InputError(f"--input-shape: every dimension must be >= 1, got {text!r}")
    if batch_size is not None:
        if batch_size <= 0:
            raise InputError(f"--batch-size: must be >= 1, got {batch_size}")
        shape = (batch_size, *shape[1:])
    return shape


def parse_model_args(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` items; VALUE is a Python literal (``False``, ``10``, ``'x'``)."""
    kwargs: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise InputError(f"--model-arg: expected KEY=VALUE, got {item!r}")
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise InputError(
                f"--model-arg {key}: {value!r} is not a Python literal (quote strings)"
            ) from None
    return kwargs


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
