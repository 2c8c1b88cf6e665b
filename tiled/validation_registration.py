"""Validators of specs: functions that check (and may normalize) a node that declares a spec.

A validator is called as ``validator(spec, metadata, entry, structure_family, structure)``
when a node is created (``entry`` is None; ``structure_family`` and ``structure`` describe the
new node) and when a node's metadata or specs are replaced or patched (``entry`` is the node's
adapter; ``structure_family`` and ``structure`` are None). It may be a coroutine function. It
raises :class:`ValidationError` to refuse the node (the client gets a 400 naming the spec), and
returns None to accept the metadata as given or a new metadata dict to store instead.

Pass a :class:`ValidationRegistry` to ``build_app(validation_registry=...)``, or declare
validators in a configuration's ``specs`` list. These are upstream Tiled's names.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from .errors import SpecRejected
from .structures.core import Spec

Validator = Callable[..., dict[str, Any] | None | Awaitable[dict[str, Any] | None]]


class ValidationError(Exception):
    """Raised by a validator: the node does not meet its spec (the message says why)."""


def _key(spec: Spec | str) -> tuple[str, str | None]:
    # A bare name registers (and finds) the spec without a version, as Spec(name) does.
    spec = Spec(spec) if isinstance(spec, str) else spec
    return spec.name, spec.version


class ValidationRegistry:
    """Validators by spec (name and version)."""

    def __init__(self) -> None:
        self._validators: dict[tuple[str, str | None], Validator] = {}

    def register(self, spec: Spec | str, validator: Validator) -> Validator:
        """Validate nodes declaring ``spec`` with ``validator``; returns the validator."""
        self._validators[_key(spec)] = validator
        return validator

    def dispatch(self, spec: Spec | str) -> Validator:
        """The validator of ``spec``; ValueError when none is registered."""
        try:
            return self._validators[_key(spec)]
        except KeyError:
            raise ValueError(f"No validator is registered for the spec {spec!r}") from None

    __call__ = dispatch

    def __contains__(self, spec: Spec | str) -> bool:
        return _key(spec) in self._validators

    def copy(self) -> ValidationRegistry:
        """A registry with the same validators, to which more may be added."""
        registry = ValidationRegistry()
        registry._validators.update(self._validators)
        return registry

    @property
    def specs(self) -> list[Spec]:
        """The specs that have a validator, in the order they were registered."""
        return [Spec(name, version) for name, version in self._validators]

    async def validate(
        self,
        specs: Iterable[Spec],
        metadata: dict[str, Any],
        entry: Any = None,
        structure_family: Any = None,
        structure: Any = None,
        *,
        reject_undeclared: bool = False,
    ) -> dict[str, Any] | None:
        """Run the validators of ``specs``; the metadata to store if one changed it, else None.

        Specs are listed most specific first, so they are validated in reverse: the least
        constrained spec's validator may normalize the metadata for the more constrained
        ones. A spec without a validator passes, unless ``reject_undeclared``.
        Raises :class:`~tiled.errors.SpecRejected` (a 400) when a validator refuses.
        """
        changed = None
        for spec in reversed(list(specs)):
            validator = self._validators.get(_key(spec))
            if validator is None:
                if reject_undeclared:
                    raise SpecRejected(f"Unrecognized spec: {spec.name}")
                continue
            try:
                result = validator(spec, metadata, entry, structure_family, structure)
                if inspect.isawaitable(result):
                    result = await result
            except ValidationError as err:
                raise SpecRejected(f"failed validation for the {spec.name} spec:\n{err}") from err
            if result is not None:
                metadata = changed = result
        return changed


# Upstream's default registry validates its ``composite`` spec, which this server does not
# implement; this one starts empty.
default_validation_registry = ValidationRegistry()

__all__ = ["ValidationError", "ValidationRegistry", "Validator", "default_validation_registry"]
