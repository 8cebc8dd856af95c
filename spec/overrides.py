"""``--set component.key=value`` parameter overrides (``cimphony verilog --set ...``).

Components: ``macro`` (:class:`spec.params.MacroParams`), ``channel``
(:class:`spec.isa.ChannelParams`), ``module`` (:class:`spec.isa.ModuleParams`).  Repeated items
merge per component.  Values are converted by the dataclass field's type: ``int`` a decimal
integer (``-3``, ``16``; no ``0x``, ``_`` or ``.``), ``bool`` exactly ``0``, ``1``, ``true`` or
``false`` (any case).  The nested fields (``ChannelParams.macro``, ``ModuleParams.channel``) are
not keys: :func:`build_params` nests the components, so macro overrides reach the macro top and
every bank of the channel and module, and channel overrides the channel top and every channel of
the module.  Every error is a ValueError naming the item (``--set macro.n_in=abc: n_in must be
an int, got 'abc'``).
"""
from __future__ import annotations

import dataclasses
import re
import typing

from spec.isa import ChannelParams, ModuleParams
from spec.params import MacroParams

__all__ = ["COMPONENTS", "parse_set", "build_params"]

#: component name -> params dataclass, outermost last (the order they nest in)
COMPONENTS = {"macro": MacroParams, "channel": ChannelParams, "module": ModuleParams}
_NESTED = {"channel": "macro", "module": "channel"}       # component -> its nested field
_BOOLS = {"0": False, "1": True, "false": False, "true": True}


def _keys(comp: str) -> dict[str, type]:
    """Overridable fields of ``comp``: name -> type (the nested params field excluded)."""
    cls = COMPONENTS[comp]
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name != _NESTED.get(comp)}


def _convert(item: str, key: str, typ: type, text: str):
    if typ is bool:
        if text.lower() not in _BOOLS:
            raise ValueError(f"--set {item}: {key} must be a bool (0, 1, true or false), "
                             f"got {text!r}")
        return _BOOLS[text.lower()]
    if typ is int:
        if not re.fullmatch(r"[+-]?[0-9]+", text):
            raise ValueError(f"--set {item}: {key} must be an int, got {text!r}")
        return int(text)
    raise ValueError(f"--set {item}: {key} has type {typ.__name__}, which --set cannot set")


def parse_set(items: list[str]) -> dict[str, dict[str, object]]:
    """Parse ``component.key=value`` items into typed overrides per component.

    Parameters
    ----------
    items : list of str
        e.g. ``["macro.n_in=16", "macro.w_bits=4", "channel.dcs=0"]``.

    Returns
    -------
    dict
        ``{"macro": {...}, "channel": {...}, "module": {...}}`` (every component present, empty
        if not overridden), e.g. ``{"macro": {"n_in": 16, "w_bits": 4}, "channel": {"dcs":
        False}, "module": {}}``.

    Raises
    ------
    ValueError
        naming the item: no ``=`` or no ``component.``, unknown component or key, a value the
        field's type does not accept, or the same key given twice with different values (the
        same value twice is accepted).
    """
    if isinstance(items, (str, bytes)) or not isinstance(items, (list, tuple)):
        raise ValueError(f"parse_set: items must be a list of strings, got {items!r}")
    out: dict[str, dict[str, object]] = {c: {} for c in COMPONENTS}
    given: dict[tuple[str, str], str] = {}
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"parse_set: every item must be a str, got {item!r}")
        name, eq, text = item.partition("=")
        comp, dot, key = name.partition(".")
        if not eq or not dot or not comp or not key:
            raise ValueError(f"--set {item}: expected COMPONENT.KEY=VALUE with COMPONENT one of "
                             f"{', '.join(COMPONENTS)}")
        if comp not in COMPONENTS:
            raise ValueError(f"--set {item}: unknown component {comp!r} (expected one of "
                             f"{', '.join(COMPONENTS)})")
        keys = _keys(comp)
        if key not in keys:
            raise ValueError(f"--set {item}: unknown key {key!r} of {comp} (keys: "
                             f"{', '.join(keys)})")
        value = _convert(item, key, keys[key], text)
        if key in out[comp] and out[comp][key] != value:
            raise ValueError(f"--set {item}: conflicts with --set {given[comp, key]}")
        out[comp][key] = value
        given.setdefault((comp, key), item)
    return out


def _fmt(v) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def build_params(overrides: dict[str, dict[str, object]]
                 ) -> tuple[MacroParams, ChannelParams, ModuleParams]:
    """The three params with ``overrides`` (as from :func:`parse_set`) applied, nested.

    Returns ``(macro, channel, module)`` with ``channel.macro == macro`` and
    ``module.channel == channel``.  A ValueError of a params dataclass is re-raised naming the
    ``--set`` item of the field it names (or, for a constraint between fields, every item of
    that component and of the components nested in it).
    """
    if not isinstance(overrides, dict):
        raise ValueError(f"build_params: overrides must be a dict, got {overrides!r}")
    bad = set(overrides) - set(COMPONENTS)
    if bad:
        raise ValueError(f"build_params: unknown component(s) {sorted(bad)} (expected "
                         f"{', '.join(COMPONENTS)})")
    built: dict[str, object] = {}
    inner = None
    for comp, cls in COMPONENTS.items():
        kw = dict(overrides.get(comp) or {})
        if comp in _NESTED:
            kw[_NESTED[comp]] = inner
        try:
            inner = built[comp] = cls(**kw)
        except (TypeError, ValueError) as e:
            raise ValueError(_blame(overrides, comp, e)) from None
    return built["macro"], built["channel"], built["module"]


def _blame(overrides, comp: str, e: Exception) -> str:
    own = overrides.get(comp) or {}
    m = re.match(r"\w+: (\w+)=", str(e))
    if m and m.group(1) in own:
        items = [f"{comp}.{m.group(1)}={_fmt(own[m.group(1)])}"]
    else:
        upto = list(COMPONENTS)[:list(COMPONENTS).index(comp) + 1]
        items = [f"{c}.{k}={_fmt(v)}" for c in upto for k, v in (overrides.get(c) or {}).items()]
    return f"{' '.join('--set ' + i for i in items) or comp}: {e}"
