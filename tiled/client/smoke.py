"""``read(node)``: read every node below ``node``, to check that a whole tree is servable."""

from __future__ import annotations

from typing import Any


def read(node: Any, verbose: bool = False, strict: bool = False) -> list[tuple[str, Exception]]:
    """Read each node below ``node`` (containers walked, data read); the failures as
    ``(path, error)`` pairs, or the first failure raised with ``strict``."""
    failures: list[tuple[str, Exception]] = []

    def visit(child: Any) -> None:
        path = "/".join(child.path_parts)
        try:
            if child.item["attributes"].get("structure_family") == "container" and hasattr(
                child, "values"
            ):
                for grandchild in child.values():
                    visit(grandchild)
            elif hasattr(child, "read"):
                child.read()
            if verbose:
                print(f"read /{path}")
        except Exception as error:
            if strict:
                raise
            failures.append((path, error))

    visit(node)
    return failures


__all__ = ["read"]
