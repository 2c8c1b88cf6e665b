"""The zarr_format package: codec JSON zarr-python reads, and the layering it exists for."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import numcodecs
import numpy
import pytest

from tiled.zarr_format.formats import ENCODINGS_BY_FORMAT, encoding_for
from tiled.zarr_format.model import VARIABLE_LENGTH_STRING, ZarrArrayMeta
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
