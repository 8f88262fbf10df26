"""Reference implementations for plugin layers, keyed by the plugin's name, version and namespace.

A network that uses a plugin (IPluginV3Layer) can only be evaluated when someone has registered what
the plugin computes, in NumPy:

    @register_plugin_reference("WenetRelPosAttention", version="1")
    def rel_pos_attention(inputs, fields):
        ...
        return [out]

`fields` holds the plugin's serialized fields by name (NumPy arrays or strings).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

PluginReference = Callable[[list[np.ndarray], dict[str, object]], list[np.ndarray]]

_REGISTRY: dict[tuple[str, str, str], PluginReference] = {}


def register_plugin_reference(name: str, version: str = "1", namespace: str = ""):
    """Decorator: `fn(inputs, fields) -> outputs` computes plugin `name`/`version`/`namespace`."""
    key = (str(name), str(version), str(namespace))

    def decorate(fn: PluginReference) -> PluginReference:
        if key in _REGISTRY and _REGISTRY[key] is not fn:
            raise ValueError(f"plugin reference {_describe(key)} is already registered (by {_REGISTRY[key].__qualname__})")
        _REGISTRY[key] = fn
        return fn

    return decorate


def unregister_plugin_reference(name: str, version: str = "1", namespace: str = "") -> None:
    _REGISTRY.pop((str(name), str(version), str(namespace)), None)


def _describe(key: tuple[str, str, str]) -> str:
    name, version, namespace = key
    return f"'{namespace + '::' if namespace else ''}{name}' version '{version}'"


def lookup_plugin_reference(name: str, version: str = "1", namespace: str = "") -> PluginReference:
    """The registered reference, or UnsupportedLayerError-friendly KeyError naming what is missing."""
    key = (str(name), str(version), str(namespace))
    try:
        return _REGISTRY[key]
    except KeyError:
        known = ", ".join(_describe(k) for k in sorted(_REGISTRY)) or "none"
        raise KeyError(
            f"no reference implementation registered for plugin {_describe(key)} "
            f"(use netdef.evaluator.register_plugin_reference; registered: {known})"
        ) from None


def plugin_fields(plugin) -> dict[str, object]:
    """The plugin's fields by name, read through get_fields_to_serialize (IPluginV3 OneCore)."""
    fields: dict[str, object] = {}
    getter = getattr(plugin, "get_fields_to_serialize", None)
    if getter is None:
        return fields
    collection = getter()
    for i in range(len(collection) if hasattr(collection, "__len__") else 0):
        field = collection[i]
        data = field.data
        fields[field.name] = data.decode() if isinstance(data, (bytes, bytearray)) else np.asarray(data)
    return fields
