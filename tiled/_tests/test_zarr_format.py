"""The zarr_format package: codec JSON zarr-python reads, and the layering it exists for."""

from __future__ import annotations

import ast
import itertools
import math
import random
from pathlib import Path

import numcodecs
import numpy
import pytest

from tiled.zarr_format.formats import ENCODINGS_BY_FORMAT, encoding_for
from tiled.zarr_format.model import (
    MAX_CHUNKS_PER_DIMENSION,
    VARIABLE_LENGTH_STRING,
    ZarrArrayMeta,
    choose_chunk_shape,
)
from tiled.zarr_format.v3 import compressor_json

from .zarr_conformance import open_with_zarr

PACKAGE = Path(__file__).parents[1]

# Codec chains adapters produce: the configurable ones, what HDF5 and TIFF files store.
CODEC_CHAINS = {
    "blosc-lz4": (numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE),),
    "blosc-autoshuffle": (numcodecs.Blosc(cname="zstd", shuffle=numcodecs.Blosc.AUTOSHUFFLE),),
    "blosc-bitshuffle": (numcodecs.Blosc(cname="zlib", shuffle=numcodecs.Blosc.BITSHUFFLE),),
    "zstd-checksum": (numcodecs.Zstd(level=1, checksum=True),),
    "gzip": (numcodecs.GZip(level=5),),
    "zlib": (numcodecs.Zlib(level=4),),
    "shuffle-then-zlib": (numcodecs.Shuffle(elementsize=8), numcodecs.Zlib(level=6)),
    "lz4": (numcodecs.LZ4(),),
    "none": (),
}


@pytest.mark.parametrize("chain", CODEC_CHAINS)
@pytest.mark.parametrize("dtype", ["<f8", ">i4", "u1", "strings"])
def test_zarr_python_reads_every_codec_chain(chain, dtype, zarr_format):
    if dtype == "strings" and chain.startswith("shuffle"):
        pytest.skip("byte shuffling needs fixed-size elements")
    if dtype == "strings":
        data = numpy.array(["alpha", "β", "", "delta"] * 5, dtype=VARIABLE_LENGTH_STRING)
    else:
        data = numpy.arange(20).astype(dtype)
    meta = ZarrArrayMeta(
        shape=data.shape, chunk_shape=(8,), dtype=data.dtype, compressors=CODEC_CHAINS[chain]
    )
    encoding = encoding_for(zarr_format)
    store = dict(encoding.array_documents(meta))
    for (index,) in itertools.product(range(meta.grid_shape[0])):
        region = meta.chunk_region((index,))
        store[encoding.chunk_key((index,))] = meta.encode_chunk(data[region])
    read = open_with_zarr(store, zarr_format)[...]
    assert [str(x) for x in read] == [str(x) for x in data]


def test_v3_codec_names_follow_the_specification_then_numcodecs():
    assert compressor_json(numcodecs.GZip(level=2).get_config(), 8) == {
        "name": "gzip",
        "configuration": {"level": 2},
    }
    assert compressor_json(numcodecs.Zlib(level=3).get_config(), 8) == {
        "name": "numcodecs.zlib",
        "configuration": {"level": 3},
    }
    blosc = compressor_json(numcodecs.Blosc(shuffle=numcodecs.Blosc.AUTOSHUFFLE).get_config(), 1)
    assert blosc["configuration"]["shuffle"] == "bitshuffle"  # what numcodecs does for 1 byte
    assert blosc["configuration"]["typesize"] == 1


def test_one_encoding_per_format():
    assert sorted(ENCODINGS_BY_FORMAT) == [2, 3]
    assert all(encoding_for(str(f)) is e for f, e in ENCODINGS_BY_FORMAT.items())


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, imported names, relative level) of every import statement in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [alias.name for alias in node.names]
            found.append((node.module or "", names, node.level))
    return found


def _sources(*parts: str) -> list[Path]:
    return sorted(PACKAGE.joinpath(*parts).rglob("*.py"))


def test_structures_hold_data_only():
    offenders = {
        path.name: module
        for path in _sources("structures")
        for module, _, _ in _imports(path)
        if module.split(".")[0] in ("numcodecs", "zarr")
    }
    assert offenders == {}


def _absolute(path: Path, module: str, level: int) -> str:
    if not level:
        return module
    package = list(path.relative_to(PACKAGE.parent).parent.parts)
    return ".".join([*package[: len(package) - level + 1], *([module] if module else [])])


def test_zarr_format_sits_below_server_and_serialization():
    # The package may use Tiled's errors, the pure structures below it (the metadata JSON
    # rule, for attributes) and itself, nothing above (server, serialization, adapters,
    # catalog).
    offenders = {
        (path.name, absolute)
        for path in _sources("zarr_format")
        for module, _, level in _imports(path)
        for absolute in [_absolute(path, module, level)]
        if absolute.split(".")[0] == "tiled"
        and not absolute.startswith(("tiled.errors", "tiled.structures", "tiled.zarr_format"))
    }
    assert offenders == set()


def test_no_private_zarr_python_names_outside_their_one_module():
    allowed = PACKAGE / "zarr_format" / "zarr_python.py"
    offenders = []
    for path in _sources():
        if "_tests" in path.parts or path == allowed:
            continue
        for module, names, level in _imports(path):
            if level or module.split(".")[0] != "zarr":
                continue
            private = any(part.startswith("_") for part in module.split("."))
            if private or module.startswith("zarr.core") or any(n.startswith("_") for n in names):
                offenders.append((str(path.relative_to(PACKAGE)), module, names))
    assert offenders == []


def test_no_class_swapping_at_run_time():
    offenders = [
        f"{path.relative_to(PACKAGE)}:{node.lineno}"
        for path in _sources()
        if "_tests" not in path.parts
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)
        and node.attr == "__class__"
        and isinstance(node.ctx, ast.Store)
    ]
    assert offenders == []


# --- the zarr chunk shape chosen for a node's native chunks -----------------------------------


def _plain_dimension_chunk(sizes):
    """The rule, written plainly: the size of a regular dimension (equal chunks, but perhaps
    a shorter last one), else the sizes' common divisor when it is at least a quarter of the
    largest, else the largest; empty chunks do not count."""
    sizes = [s for s in sizes if s > 0] or [1]
    regular = all(s == sizes[0] for s in sizes[:-1]) and sizes[-1] <= sizes[0]
    if regular:
        return sizes[0]
    divisor = math.gcd(*sizes)
    return divisor if 4 * divisor >= max(sizes) else max(sizes)


@pytest.mark.parametrize(
    "sizes, chunk",
    [
        ((), 1),
        ((0, 0), 1),
        ((5,), 5),
        ((5, 5, 3), 5),
        ((5, 5, 5), 5),
        ((3, 5), 5),  # a shorter first chunk: irregular, the largest
        ((5, 3, 5), 5),
        ((4, 4, 8), 4),  # the common divisor
        ((2, 4, 6, 8), 2),
        ((3, 0, 3), 3),  # an empty chunk in between does not count
        ((1, 2, 3, 100), 100),
    ],
)
def test_chunk_shape_of_native_chunks(sizes, chunk):
    assert choose_chunk_shape([sizes], 1, 10**9) == (chunk,)
    assert choose_chunk_shape([list(sizes)], 1, 10**9) == (chunk,)


def test_chunk_shape_follows_the_plain_rule_on_random_chunks():
    rng = random.Random(7)
    for _ in range(5000):
        sizes = [rng.choice([0, 1, 2, 3, 4, 6, 8, 12]) for _ in range(rng.randint(0, 6))]
        assert choose_chunk_shape([sizes], 1, 10**9) == (_plain_dimension_chunk(sizes),)


def test_chunk_shape_of_a_million_chunks_halves_to_the_budget():
    sizes = (1000,) * (MAX_CHUNKS_PER_DIMENSION - 1) + (500,)
    assert choose_chunk_shape([sizes, (10,)], 8, 1000 * 10 * 8) == (1000, 10)
    assert choose_chunk_shape([sizes, (10,)], 8, 1000 * 8) == (63, 10)  # widest halved
