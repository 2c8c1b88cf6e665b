"""``tree(node)``: print a container's hierarchy, like the ``tree`` command."""

from __future__ import annotations

from typing import Any


def tree(node: Any, max_lines: int | None = 20, *, file: Any = None) -> None:
    """Print the keys below ``node``, indented by depth, at most ``max_lines`` lines."""
    printed = 0

    def walk(container: Any, prefix: str) -> bool:
        nonlocal printed
        keys = list(container)
        for index, key in enumerate(keys):
            if max_lines is not None and printed >= max_lines:
                print(f"{prefix}...", file=file)
                return False
            last = index == len(keys) - 1
            print(f"{prefix}{'└── ' if last else '├── '}{key}", file=file)
            printed += 1
            child = container[key]
            if child.item["attributes"].get("structure_family") == "container" and hasattr(
                child, "keys"
            ):
                if not walk(child, prefix + ("    " if last else "│   ")):
                    return False
        return True

    walk(node, "")


__all__ = ["tree"]
