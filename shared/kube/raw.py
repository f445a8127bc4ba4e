"""Kubernetes objects as the API sends them: plain JSON mappings with camelCase keys.

Hot paths (the inventory watch, which sees every pod of the cluster) read the
apiserver's JSON directly: building the client's model objects cost about a
millisecond per pod and most of the proxy worker's memory. Code that still holds
a model object (tests, a one-off read) passes it through :func:`as_raw` so that
one reader serves both.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

__all__ = ["Raw", "as_raw", "dig", "labels_of", "timestamp_of", "uid_of", "undeclared"]

Raw = Mapping[str, Any]
"""One object as the API's JSON has it (``metadata``, ``spec``, ``status``...)."""


def as_raw(obj: Any) -> Raw:
    """``obj`` as API JSON: a mapping is returned as is, a client model object converted."""
    if isinstance(obj, Mapping):
        return obj
    converted = _convert(obj)
    return converted if isinstance(converted, Mapping) else {}


def dig(obj: Raw | None, *path: str) -> Any:
    """The value at ``path`` under ``obj``, or None where any step is missing or not a mapping."""
    value: Any = obj
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def labels_of(obj: Raw | None) -> Mapping[str, str]:
    """An object's labels; empty when it has none."""
    return dig(obj, "metadata", "labels") or {}


def timestamp_of(value: Any) -> float | None:
    """Seconds since the epoch of an API time (RFC 3339 text, as the JSON has it, or a
    ``datetime``); None when there is none or it cannot be read."""
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def undeclared(fn: Callable[..., Any], *args: Any) -> Callable[..., Any]:
    """``fn`` without the return type its docstring declares.

    ``kubernetes.watch.Watch.stream`` turns events into the type it finds on the
    function (its return annotation, then its docstring); finding none, it leaves
    them as the apiserver's JSON, which is what a hot watch wants. The name is kept
    for logs.
    """

    def call(**kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    call.__name__ = call.__qualname__ = fn.__name__
    return call


def uid_of(data: bytes) -> str | None:
    """``metadata.uid`` of one object's JSON (an answer to a create), without reading the rest."""
    try:
        return _UID.decode(data).metadata.uid
    except msgspec.DecodeError:
        return None


class _Meta(msgspec.Struct, frozen=True):
    uid: str | None = None


class _Object(msgspec.Struct, frozen=True):
    metadata: _Meta = _Meta()


_UID = msgspec.json.Decoder(_Object)


def _convert(value: Any) -> Any:
    # Generated models name each attribute's JSON key in ``attribute_map``.
    attribute_map: Mapping[str, str] | None = getattr(value, "attribute_map", None)
    if isinstance(attribute_map, Mapping) and not isinstance(value, Mapping):
        return {
            key: _convert(item)
            for attribute, key in attribute_map.items()
            if (item := getattr(value, attribute, None)) is not None
        }
    if isinstance(value, Mapping):
        return {k: _convert(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_convert(v) for v in value]
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return value
