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

from .core import UnsupportedLayerError
from .registry import implements

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


def _capability(plugin, kind: str):
    """The plugin's capability interface `kind` (CORE, RUNTIME), or the plugin itself."""
    getter = getattr(plugin, "get_capability_interface", None)
    if getter is None:
        return plugin
    from ..backend import trt

    try:
        interface = getter(getattr(trt.PluginCapabilityType, kind))
    except Exception:  # noqa: BLE001 - a plugin may not offer this capability
        interface = None
    return interface if interface is not None else plugin


def plugin_identity(plugin) -> tuple[str, str, str]:
    """(name, version, namespace) of an IPluginV3 (through its CORE capability) or IPluginV2."""
    core = _capability(plugin, "CORE")
    if hasattr(core, "plugin_name"):
        return str(core.plugin_name), str(core.plugin_version), str(core.plugin_namespace or "")
    return str(plugin.plugin_type), str(plugin.plugin_version), str(plugin.plugin_namespace or "")


def plugin_fields(plugin) -> dict[str, object]:
    """The plugin's fields by name: get_fields_to_serialize of its RUNTIME capability (IPluginV3),
    else the plugin object's own public attributes (numbers, strings, arrays)."""
    runtime = _capability(plugin, "RUNTIME")
    getter = getattr(runtime, "get_fields_to_serialize", None)
    fields: dict[str, object] = {}
    if getter is not None:
        collection = getter()
        for i in range(len(collection)):
            field = collection[i]
            data = field.data
            fields[field.name] = data.decode() if isinstance(data, (bytes, bytearray)) else np.asarray(data)
        return fields
    for name, value in vars(plugin).items() if hasattr(plugin, "__dict__") else ():
        if not name.startswith("_") and isinstance(value, (int, float, str, np.ndarray, list, tuple)):
            fields[name] = value
    return fields


@implements("PLUGIN_V3", "PLUGIN_V2")
def plugin_layer(layer, ins):
    """A plugin layer: the reference registered for its plugin's name, version and namespace."""
    name, version, namespace = plugin_identity(layer.plugin)
    try:
        reference = lookup_plugin_reference(name, version, namespace)
    except KeyError as exc:
        raise UnsupportedLayerError(layer, exc.args[0]) from None
    return list(reference(list(ins), plugin_fields(layer.plugin)))
