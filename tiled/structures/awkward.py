"""Awkward arrays: a form (awkward's JSON type description) and a length.

The data of an awkward array are its buffers, flat byte strings named ``{form_key}-{role}``
(``node0-offsets``, ``node2-data``), as ``awkward.to_buffers`` names them. awkward itself is
imported only when a form has to be interpreted, so that importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidStructure

if TYPE_CHECKING:
    import awkward


@dataclass(frozen=True)
class AwkwardStructure:
    length: int
    form: dict[str, Any]

    def __post_init__(self) -> None:
        if isinstance(self.length, bool) or not isinstance(self.length, int) or self.length < 0:
            raise InvalidStructure(f"An awkward length must be a non-negative int: {self.length!r}")
        if not isinstance(self.form, dict):
            raise InvalidStructure("An awkward form must be a JSON object")

    @property
    def awkward_form(self) -> awkward.forms.Form:
        import awkward

        return awkward.forms.from_dict(self.form)

    def buffer_dtypes(self) -> dict[str, Any]:
        """The numpy dtype of each buffer the form expects, by buffer name."""
        return dict(self.awkward_form.expected_from_buffers())

    def to_json(self) -> dict[str, Any]:
        return {"length": self.length, "form": self.form}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> AwkwardStructure:
        try:
            return cls(length=value["length"], form=value["form"])
        except (KeyError, TypeError) as err:
            raise InvalidStructure(f"Invalid awkward structure: {err}") from None


def check_form(form: dict[str, Any]) -> None:
    """Refuse (InvalidStructure) a form awkward cannot read."""
    import awkward

    try:
        awkward.forms.from_dict(form)
    except Exception as err:  # awkward raises several kinds for a malformed form
        raise InvalidStructure(f"Invalid awkward form: {err}") from None


# --- projection: the part of a form that a slice reads -------------------------------------
#
# A client reading ``array[0, "y"]`` needs only the buffers the slice touches (found with
# awkward's typetracer); the form it rebuilds the array with keeps only the nodes it has the
# buffers of. Each kind of form node is projected by its own rule.


def _project_record(form: Any, touched: Collection[str]) -> Any:
    fields = form.fields if form.fields is not None else [None] * len(form.contents)
    kept = [
        (field, projected)
        for field, projected in (
            (f, project_form(c, touched)) for f, c in zip(fields, form.contents, strict=True)
        )
        if projected is not None
    ]
    return form.copy(
        fields=None if form.fields is None else [field for field, _ in kept],
        contents=[content for _, content in kept],
    )


def _project_union(form: Any, touched: Collection[str]) -> Any:
    projected = [project_form(content, touched) for content in form.contents]
    kept = [content for content in projected if content is not None]
    if not kept:
        return None
    if len(kept) == 1:
        return kept[0]
    if len(kept) == len(form.contents):
        return form
    raise NotImplementedError(
        "Reading only some alternatives of a union is not supported; read the whole array"
    )


def _project_leaf(form: Any, touched: Collection[str]) -> Any:
    return form.copy() if form.form_key in touched else None


def _project_wrapper(form: Any, touched: Collection[str]) -> Any:
    # Nodes without buffers of their own (regular lists, unmasked options) are kept when
    # anything below them is.
    content = project_form(form.content, touched)
    return None if content is None else form.copy(content=content)


def _project_with_buffers(form: Any, touched: Collection[str]) -> Any:
    if form.form_key not in touched:
        return None
    content = project_form(form.content, touched)
    return form.copy(content=content) if content is not None else form.copy()


def _projectors() -> list[tuple[type, Callable[[Any, Collection[str]], Any]]]:
    import awkward

    forms = awkward.forms
    return [
        (forms.RecordForm, _project_record),
        (forms.UnionForm, _project_union),
        (forms.NumpyForm, _project_leaf),
        (forms.RegularForm, _project_wrapper),
        (forms.UnmaskedForm, _project_wrapper),
        (forms.EmptyForm, lambda form, touched: form.copy()),
    ]


def project_form(form: awkward.forms.Form, form_keys_touched: Collection[str]) -> Any:
    """``form`` without the nodes whose buffers are not in ``form_keys_touched`` (None when
    nothing of it is touched)."""
    for kind, projector in _projectors():
        if isinstance(form, kind):
            return projector(form, form_keys_touched)
    return _project_with_buffers(form, form_keys_touched)


__all__ = ["AwkwardStructure", "project_form"]
