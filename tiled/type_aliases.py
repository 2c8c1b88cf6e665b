"""Type names that upstream Tiled's extension code imports (access policies, adapters, app
tasks): ``from tiled.type_aliases import AccessTags, Filters, Scopes, JSON``."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, Sequence
from types import EllipsisType
from typing import Annotated, Any, TypedDict, Union

from pydantic import AfterValidator

from .utils import import_object

JSON_ITEM = Union[str, int, float, Mapping[str, "JSON_ITEM"], Sequence["JSON_ITEM"], None]
JSON = Mapping[str, JSON_ITEM]

AccessTags = frozenset[str]  # the tags a node carries, or an API key is limited to
Scopes = set[str]
Query = Any  # an instance of one of tiled.queries' classes
Filters = list[Query]  # what a policy narrows a container by (AND)
Chunks = tuple[tuple[int, ...], ...]

AppTask = Callable[[], Coroutine[None, None, Any]]
"""An async function the application runs at startup, at shutdown or in the background."""


class TaskMap(TypedDict):
    background: list[AppTask]
    startup: list[AppTask]
    shutdown: list[AppTask]


def _entry_point(text: str) -> Any:
    """The object ``package.module:attribute`` names; a ValueError (a validation error to
    pydantic) for any other spelling or a name that does not import."""
    if not isinstance(text, str) or text.count(":") != 1:
        raise ValueError(f"{text!r} is not of the form package.module:attribute")
    module, attribute = text.split(":")
    if not module or not attribute:
        raise ValueError(f"{text!r} is not of the form package.module:attribute")
    try:
        return import_object(text, accept_live_object=False)
    except ImportError as error:  # UnimportableObject too
        raise ValueError(str(error)) from None


EntryPointString = Annotated[str, AfterValidator(_entry_point)]
"""A ``package.module:attribute`` string, validated into the object it names."""

__all__ = [
    "AccessTags",
    "AppTask",
    "Chunks",
    "EllipsisType",
    "EntryPointString",
    "Filters",
    "JSON",
    "JSON_ITEM",
    "Query",
    "Scopes",
    "TaskMap",
]
