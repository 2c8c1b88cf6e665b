"""Preconditions of a write (HTTP ``If-Match`` / ``If-None-Match``), checked by the storage
that holds the current version, at the moment it replaces it, so that two writers cannot
silently overwrite each other."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import PreconditionFailed


def _opaque(tag: str) -> str:
    return tag.strip().removeprefix("W/").strip('"')


@dataclass(frozen=True)
class WriteCondition:
    """ETags (or ``*``) the current version must match (``if_match``) or must not
    (``if_none_match``); None where the request set no condition."""

    if_match: tuple[str, ...] | None = None
    if_none_match: tuple[str, ...] | None = None

    @classmethod
    def from_headers(cls, if_match: str | None, if_none_match: str | None) -> WriteCondition:
        def tags(header: str | None) -> tuple[str, ...] | None:
            if header is None:
                return None
            return tuple(_opaque(t) if t.strip() != "*" else "*" for t in header.split(","))

        return cls(tags(if_match), tags(if_none_match))

    @property
    def unconditional(self) -> bool:
        return self.if_match is None and self.if_none_match is None

    def check(self, current: str | None) -> None:
        """Raise :class:`PreconditionFailed` unless the version tagged ``current`` (None: there
        is none) satisfies the condition (RFC 9110 section 13.1)."""
        if self.if_match is not None:
            if current is None or not ("*" in self.if_match or _opaque(current) in self.if_match):
                raise PreconditionFailed(
                    "If-Match does not hold: the stored version is "
                    + (
                        "absent"
                        if current is None
                        else f"{current}, not one of {list(self.if_match)}"
                    )
                )
        if self.if_none_match is not None and current is not None:
            if "*" in self.if_none_match or _opaque(current) in self.if_none_match:
                raise PreconditionFailed(
                    "If-None-Match does not hold: the key exists"
                    + ("" if "*" in self.if_none_match else f" at version {current}")
                )


UNCONDITIONAL = WriteCondition()

__all__ = ["UNCONDITIONAL", "WriteCondition"]
