"""Upstream's home of ``DELETE_KEY`` (``from tiled.client.metadata_update import DELETE_KEY``,
as its ``update_metadata`` documentation spells it): the same marker as
``tiled.client.DELETE_KEY``; and of ``apply_update_patch``, the ``dict.update``-like merge
that ``build_metadata_patches`` diffs against."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from .base import DELETE_KEY


def apply_update_patch(*objs: Any, **kw: Any) -> Any:
    """Merge each of ``objs[1:]`` into ``objs[0]`` (changed in place, and returned), as
    upstream's function of this name does: a dict value merges into a dict already there
    (anything else there is replaced by a new dict), ``DELETE_KEY`` removes a key, any
    other value (lists too) replaces what is there. An update that is not a dict replaces
    the document whole. ``position="first"`` puts the keys added at the front (every dict
    must then be an ``OrderedDict``); ``"last"`` at the end."""
    position = kw.get("position")
    result = objs[0]
    for update in objs[1:]:
        result = _merge(result, update, position)
    return result


def _merge(target: Any, update: Any, position: str | None) -> Any:
    if not isinstance(target, dict):
        target = OrderedDict() if position else {}
    if not isinstance(update, dict):
        return update
    if position:
        if position not in ("first", "last"):
            raise ValueError("position can either be first or last")
        if not (isinstance(target, OrderedDict) and isinstance(update, OrderedDict)):
            raise ValueError("If using position all dicts need to be OrderedDicts")
    for key, value in update.items():
        if isinstance(value, dict):
            if not isinstance(target.get(key), dict):
                target[key] = OrderedDict() if position else {}
                if position == "first":
                    target.move_to_end(key, last=False)
            _merge(target[key], value, position)
        elif value is DELETE_KEY:
            target.pop(key, None)
        else:
            added = key not in target
            target[key] = value
            if added and position == "first":
                target.move_to_end(key, last=False)
    return target


__all__ = ["DELETE_KEY", "apply_update_patch"]
