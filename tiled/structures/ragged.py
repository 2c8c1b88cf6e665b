"""Ragged arrays: n-dimensional arrays whose trailing dimensions may vary in length per row.

A ragged array has a known length (its first dimension); each further dimension is either a
fixed size or ``None`` (variable). Only the first dimension is chunked: a chunk is a run of
rows, stored and written as one piece.

In memory a ragged array is a ``ragged.array`` whose awkward layout is *canonical*: variable
dimensions are ``ListOffsetArray`` nodes, fixed dimensions between them ``RegularArray``
nodes, and the trailing fixed dimensions belong to the ``NumpyArray`` leaf (its inner
shape). A canonical layout maps one-to-one to the structure (see
:attr:`RaggedStructure.awkward_form`), so its buffers are the node's data. ``awkward`` and
``ragged`` are imported when data are handled, not when this module is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NewType

from ..errors import InvalidStructure
from .array import BuiltinDtype, StructDtype, data_type_from_json, data_type_from_numpy

if TYPE_CHECKING:
    import awkward
    import numpy

# Anything make_ragged_array accepts: ragged or awkward arrays, numpy arrays, nested lists.
RaggedCompatibleType = Any
# A ragged.array whose layout is canonical (see the module's docstring).
CanonicalRaggedArray = NewType("CanonicalRaggedArray", object)


class RaggedSlicingError(InvalidStructure):
    """A slice that cannot be applied to a ragged array (e.g. indexing an empty row)."""


class RaggedRegularizationError(InvalidStructure):
    """A dimension asked to be fixed-size holds rows of different lengths."""


def _check_shape_and_chunks(shape: tuple, chunks: tuple) -> None:
    if not shape:
        raise InvalidStructure("A ragged array must have at least one dimension")
    if not chunks:
        raise InvalidStructure("A ragged array must have at least one chunk dimension")
    if shape[0] is None:
        raise InvalidStructure("The first dimension of a ragged array must be a known integer")
    if chunks[0] is None:
        raise InvalidStructure("The first chunks dimension must be a known integer partitioning")
    if len(shape) != len(chunks):
        raise InvalidStructure("Shape and chunks must have the same number of dimensions")
    if any(c is not None and len(c) != 1 for c in chunks[1:]):
        raise InvalidStructure("Only the first dimension can be partitioned into chunks")
    if sum(chunks[0]) != shape[0]:
        raise InvalidStructure(f"The chunks {list(chunks[0])} do not add up to {shape[0]} rows")


@dataclass(frozen=True, kw_only=True)
class RaggedStructure:
    """Data type, shape (``None`` for variable dimensions), element count, chunks (the
    first dimension's row counts; ``None`` for variable dimensions), dimension names."""

    data_type: BuiltinDtype | StructDtype
    shape: tuple[int | None, ...]
    size: int
    chunks: tuple[tuple[int, ...] | None, ...]
    dims: tuple[str, ...] | None = None
    resizable: bool | tuple[bool, ...] = False

    def __post_init__(self) -> None:
        shape = tuple(None if s is None else int(s) for s in self.shape)
        chunks = tuple(None if c is None else tuple(int(n) for n in c) for c in self.chunks)
        _check_shape_and_chunks(shape, chunks)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "chunks", chunks)
        if self.dims is not None:
            if len(self.dims) != len(shape):
                raise InvalidStructure(f"dims {list(self.dims)} do not match rank {len(shape)}")
            object.__setattr__(self, "dims", tuple(self.dims))

    @classmethod
    def from_array(
        cls,
        array: RaggedCompatibleType,
        shape: tuple[int | None, ...] | None = None,
        chunks: tuple[tuple[int, ...] | None, ...] | None = None,
        dims: tuple[str, ...] | None = None,
    ) -> RaggedStructure:
        """The structure of ``array`` (one chunk, unless ``chunks`` are given)."""
        array = make_ragged_array(array)
        shape = tuple(shape or array.shape)
        chunks = chunks or tuple(None if n is None else (n,) for n in shape)
        return cls(
            data_type=data_type_from_numpy(array.dtype),
            shape=shape,
            size=int(array.size),
            chunks=chunks,
            dims=tuple(dims) if dims else None,
        )

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> RaggedStructure:
        try:
            dims = value.get("dims")
            return cls(
                data_type=data_type_from_json(value["data_type"]),
                shape=tuple(value["shape"]),
                size=value["size"],
                chunks=tuple(None if c is None else tuple(c) for c in value["chunks"]),
                dims=tuple(dims) if dims is not None else None,
                resizable=value.get("resizable", False),
            )
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, InvalidStructure):
                raise
            raise InvalidStructure(f"Invalid ragged structure: {err}") from None

    def to_json(self) -> dict[str, Any]:
        return {
            "data_type": self.data_type.to_json(),
            "shape": list(self.shape),
            "size": self.size,
            "chunks": [None if c is None else list(c) for c in self.chunks],
            "dims": list(self.dims) if self.dims is not None else None,
            "resizable": self.resizable,
        }

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def ndim_fixed(self) -> int:
        """How many leading dimensions have a known size."""
        return self.shape.index(None) if None in self.shape else len(self.shape)

    @property
    def awkward_length(self) -> int:
        return self.shape[0]

    @property
    def awkward_form(self) -> awkward.forms.Form:
        """The awkward form of the canonical layout, its nodes keyed ``node{depth}``.

        Built from the innermost dimension out: trailing fixed sizes are the leaf's inner
        shape; a variable dimension wraps what is inside in a list with offsets; a fixed
        dimension above a variable one wraps it in a regular list.
        """
        import awkward

        primitive = awkward.types.numpytype.dtype_to_primitive(self.data_type.to_numpy_dtype())
        inner_shape: tuple[int, ...] = ()
        form = None
        for dim in range(self.ndim - 1, 0, -1):
            size = self.shape[dim]
            if size is None:
                if form is None:
                    form = awkward.forms.NumpyForm(
                        primitive, inner_shape=inner_shape, form_key=f"node{dim}"
                    )
                form = awkward.forms.ListOffsetForm("i64", form, form_key=f"node{dim - 1}")
            elif form is None:
                inner_shape = (size, *inner_shape)
            else:
                form = awkward.forms.RegularForm(form, size, form_key=f"node{dim - 1}")
        if form is None:
            form = awkward.forms.NumpyForm(primitive, inner_shape=inner_shape, form_key="node0")
        return form

    def buffer_dtypes(self) -> dict[str, numpy.dtype]:
        """The dtype of each buffer of the canonical layout, by buffer name."""
        return dict(self.awkward_form.expected_from_buffers())


# --- canonical layouts ---------------------------------------------------------------------------


def _collapse_regular(layout: Any) -> Any:
    """A chain of regular lists over a NumpyArray as one NumpyArray with an inner shape;
    regular lists above a variable dimension are kept."""
    import awkward

    sizes, node = [], layout
    while isinstance(node, awkward.contents.RegularArray):
        sizes.append(node.size)
        node = node.content
    if isinstance(node, awkward.contents.NumpyArray):
        rows = layout.length * math.prod(sizes) if sizes else layout.length
        data = node.data[:rows]
        return awkward.contents.NumpyArray(
            data.reshape(layout.length, *sizes, *data.shape[1:]), parameters=node.parameters
        )
    return awkward.contents.RegularArray(
        canonical_layout(layout.content), layout.size, zeros_length=layout.length,
        parameters=layout.parameters,
    )  # fmt: skip


def _list_offsets(layout: Any) -> Any:
    import awkward

    layout = layout.to_ListOffsetArray64(False)
    return awkward.contents.ListOffsetArray(
        layout.offsets, canonical_layout(layout.content), parameters=layout.parameters
    )


def _empty_leaf(layout: Any) -> Any:
    # A typeless empty array (ragged.array([])) holds float64, as numpy's and ragged's empty
    # arrays do, so that it has a concrete buffer to store.
    import awkward
    import numpy

    return awkward.contents.NumpyArray(numpy.empty(0, dtype=numpy.float64))


def _canonicalizers() -> dict[type, Any]:
    import awkward

    contents = awkward.contents
    return {
        contents.NumpyArray: lambda layout: layout,
        contents.EmptyArray: _empty_leaf,
        contents.ListArray: _list_offsets,
        contents.ListOffsetArray: _list_offsets,
        contents.RegularArray: _collapse_regular,
    }


def canonical_layout(layout: Any) -> Any:
    """``layout`` rewritten with list offsets for variable dimensions (see the module)."""
    convert = _canonicalizers().get(type(layout))
    if convert is None:
        raise InvalidStructure(
            f"A ragged array holds numbers in (possibly nested) lists, not {type(layout).__name__}"
        )
    return convert(layout)


def _as_ragged(array: Any) -> Any:
    """Any accepted input as a ragged.array (not yet canonical)."""
    import awkward
    import numpy
    import ragged

    if isinstance(array, ragged.array):
        return array
    if isinstance(array, numpy.ndarray) and array.dtype == object:
        return ragged.array([numpy.asarray(row).tolist() for row in array])
    if isinstance(array, numpy.ndarray | awkward.Array | awkward.contents.Content):
        return ragged.array(array)
    if hasattr(array, "__dlpack__"):
        return ragged.array(array)
    if hasattr(array, "tolist"):
        return ragged.array(array.tolist())
    return ragged.array(list(array))


def _regularized(layout: Any, ndim: int, shape: Any) -> Any:
    import awkward

    for dim in range(ndim - 1, 0, -1):
        wanted = shape[dim] if shape else None
        if shape and wanted is None:
            continue
        try:
            layout = awkward.to_regular(layout, axis=dim, highlevel=False)
        except ValueError:
            if wanted is not None:  # asked for by the caller: the rows must agree
                raise RaggedRegularizationError(
                    f"Cannot regularize dimension {dim} to the desired shape {tuple(shape)}"
                ) from None
    return canonical_layout(layout)


def make_ragged_array(
    array: RaggedCompatibleType,
    shape: tuple[int | None, ...] | None = None,
    slice: Any = None,
    regularize: bool = False,
) -> Any:
    """``array`` as a ragged.array with a canonical layout.

    With ``shape``, dimensions given a size are made fixed (RaggedRegularizationError if
    their rows differ); with ``regularize``, every dimension whose rows agree becomes fixed.
    With ``slice``, only the selected part is kept, packed (nothing of the rest remains in
    the buffers); RaggedSlicingError when the slice does not apply.
    """
    import awkward
    import ragged

    array = _as_ragged(array)
    if array.ndim == 0:
        return array
    if shape is not None and len(shape) != array.ndim:
        raise InvalidStructure(
            f"Desired shape {tuple(shape)} has a different number of dimensions than the "
            f"array's {array.shape}"
        )
    layout = canonical_layout(array._impl.layout)
    if shape is not None or regularize:
        layout = _regularized(layout, array.ndim, shape)
    array = ragged.array(layout)
    if slice is None:
        return array
    try:
        array = array[tuple(slice)]
    except IndexError as err:
        raise RaggedSlicingError(
            f"Cannot apply the requested slice {tuple(slice)} to a ragged array of shape "
            f"{array.shape}: {err}"
        ) from None
    if array.ndim == 0:
        return array
    return make_ragged_array(awkward.to_packed(array._impl))


def make_ragged_chunks(array: Any, limit_bytes: int) -> tuple[tuple[int, ...] | None, ...]:
    """Chunks of ``array`` along its first dimension, each at most ``limit_bytes`` (split in
    halves until they fit; ValueError if a single row is larger)."""
    import awkward

    shape = tuple(array.shape)
    fixed = shape.index(None) if None in shape else len(shape)
    trailing = tuple((n,) for n in shape[1:fixed]) + (None,) * (len(shape) - fixed)
    if array._impl.nbytes <= limit_bytes:
        return ((shape[0],), *trailing)
    bounds = [0, shape[0]]
    position = 0
    while position < len(bounds) - 1:
        start, stop = bounds[position], bounds[position + 1]
        if awkward.to_packed(array._impl[start:stop]).nbytes <= limit_bytes:
            position += 1
        elif stop - start == 1:
            raise ValueError(f"Row {start} alone exceeds {limit_bytes} bytes")
        else:
            bounds.insert(position + 1, (start + stop) // 2)
    sizes = tuple(stop - start for start, stop in zip(bounds[:-1], bounds[1:], strict=True))
    return (sizes, *trailing)


def ragged_to_dense(array: Any) -> numpy.ndarray:
    """A numpy array holding ``array``, each variable dimension padded with NaN to its
    longest row (integers become floats to hold the NaN)."""
    import awkward

    layout = array._impl
    axis = 1
    while axis < array.ndim:
        lengths = awkward.num(layout, axis=axis)
        longest = int(awkward.max(lengths)) if awkward.count(lengths) else 0
        layout = awkward.pad_none(layout, longest, axis=axis, clip=True)
        axis += 1
    import numpy

    # Missing numbers become NaN here; whole missing rows (padding of an outer dimension)
    # come out masked, and are NaN too.
    dense = awkward.to_numpy(awkward.fill_none(layout, float("nan")), allow_missing=True)
    if isinstance(dense, numpy.ma.MaskedArray):
        dense = numpy.ma.filled(dense.astype(numpy.result_type(dense.dtype, float)), numpy.nan)
    return dense


def is_ragged_compatible_form(form: Any) -> bool:
    """Whether an awkward form holds numbers in (possibly nested) lists only."""
    import awkward

    if isinstance(form, awkward.forms.NumpyForm):
        return form.primitive in _NUMERIC_PRIMITIVES
    if isinstance(form, awkward.forms.ListOffsetForm | awkward.forms.ListForm):
        return is_ragged_compatible_form(form.content)
    if isinstance(form, awkward.forms.RegularForm):
        return is_ragged_compatible_form(form.content)
    return False


_NUMERIC_PRIMITIVES = frozenset(
    {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
     "float32", "float64", "complex64", "complex128"}
)  # fmt: skip

__all__ = [
    "CanonicalRaggedArray",
    "RaggedCompatibleType",
    "RaggedRegularizationError",
    "RaggedSlicingError",
    "RaggedStructure",
    "make_ragged_array",
    "make_ragged_chunks",
    "ragged_to_dense",
]
