"""Catalogs mounted at a node of their database (upstream's ``mount_node``), on SQLite and
PostgreSQL, through live servers and the zarr, HTTP and Python clients.

Upstream's own tests of the feature (tests/test_mount_node.py of 0.2.20) run against this
package in test_upstream_test_suite.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy
import pytest
import zarr

from tiled.catalog import from_uri, mount_segments
from tiled.client import Context, from_context
from tiled.config import ConfigError, construct_build_app_kwargs
from tiled.server.app import build_app, build_app_from_config

from .live_server import serve
from .test_catalog import database_uri, postgres_database  # noqa: F401 (fixtures)


@pytest.fixture
def uri(database_uri):  # noqa: F811 - SQLite, and PostgreSQL from an empty schema
    return database_uri


def _catalog(uri, tmp_path, **args):
    return {"uri": uri, "writable_storage": [str(tmp_path / "data")], **args}


def _whole(uri, tmp_path, **args):
    return {"catalog": _catalog(uri, tmp_path, init_if_not_exists=True, **args)}


def _trees(*trees, **top):
    return {
        "trees": [{"path": path, "tree": "catalog", "args": args} for path, args in trees],
        **top,
    }


def _make(config, *containers):
    with Context.from_app(build_app_from_config(config)) as context:
        client = from_context(context)
        for path in containers:
            parent, _, key = path.rpartition("/")
            (client[parent] if parent else client).create_container(key)


def test_two_mounts_of_one_database_do_not_mix(uri, tmp_path):
    _make(_whole(uri, tmp_path), "A", "B", "A/deep")
    config = _trees(
        ("/a", _catalog(uri, tmp_path, mount_node="/A")),
        ("/b", _catalog(uri, tmp_path, mount_node=["B"])),
        authentication={"single_user_api_key": "key"},
    )
    headers = {"Authorization": "Apikey key"}
    with serve(build_app_from_config(config)) as server:
        with Context(server.url, api_key="key") as context:
            client = from_context(context)
            client["a"].create_container("x")
            client["b"].create_container("y")
            first = client["a"].write_array(numpy.arange(3), key="same")
            second = client["b"].write_array(numpy.arange(3) * 10, key="same")
            assert list(client["a"]) == ["deep", "x", "same"]
            assert list(client["b"]) == ["y", "same"]
            assert first.data_sources()[0].assets[0].data_uri != (
                second.data_sources()[0].assets[0].data_uri
            )
        # zarr clients read each mount as a group of its own.
        for path, expected in [("a/same", [0, 1, 2]), ("b/same", [0, 10, 20])]:
            url = f"{server.url}/zarr/v3/{path}"
            array = zarr.open_array(url, mode="r", storage_options={"headers": headers})
            assert array[:].tolist() == expected
        url = f"{server.url}/zarr/v3/b"
        group = zarr.open_group(url, mode="r", storage_options={"headers": headers})
        assert sorted(group.keys()) == ["same", "y"]
        # A missing node is reported at the path asked for, not where it lies in the database.
        response = httpx.get(f"{server.url}/api/v1/metadata/a/deep/nope", headers=headers)
        assert response.status_code == 404
        assert response.json()["detail"] == "No such entry: ['a', 'deep', 'nope']"
        assert httpx.get(f"{server.url}/api/v1/metadata/a/B", headers=headers).status_code == 404
    # Served whole, the nodes are where the mounts put them.
    with Context.from_app(build_app_from_config(_whole(uri, tmp_path))) as context:
        client = from_context(context)
        assert list(client["A"]) == ["deep", "x", "same"]
        assert client["B"]["same"].read().tolist() == [0, 10, 20]


def test_a_mounted_root_keeps_its_configured_metadata_and_searches_below_it(uri, tmp_path):
    _make(_whole(uri, tmp_path), "A", "A/sub", "other")
    config = {"catalog": _catalog(uri, tmp_path, mount_node="/A/sub", metadata={"m": 1})}
    with Context.from_app(build_app_from_config(config)) as context:
        client = from_context(context)
        client.create_container("one", metadata={"color": "red"})
        client.create_container("two", metadata={"color": "blue"})
        assert client.metadata == {"m": 1}
        from tiled.queries import Eq

        assert list(client.search(Eq("color", "red"))) == ["one"]
        assert list(client) == ["one", "two"]
        # Deep search spans the mounted subtree only.
        client["one"].create_container("inner", metadata={"color": "red"})
        response = context.http_client.get(
            "/api/v1/search/",
            params={"filter[eq][condition][key]": "color", "filter[eq][condition][value]": '"red"'},
        )
        assert [item["id"] for item in response.json()["data"]] == ["one"]


def test_missing_mount_node_stops_the_server_naming_it(uri, tmp_path):
    _make(_whole(uri, tmp_path), "A")
    config = _trees(("/b", _catalog(uri, tmp_path, mount_node="/A/missing")))
    with pytest.raises(ValueError, match="mount_node '/A/missing' was not found in the database"):
        with Context.from_app(build_app_from_config(config)):
            pass


def test_created_mount_nodes_carry_specs_and_tags_on_the_last_only(uri, tmp_path):
    _make(_whole(uri, tmp_path), "X")
    config = {
        "create_mount_nodes_if_not_exist": True,
        "catalog": _catalog(
            uri, tmp_path, mount_node="/X/Y/Z", specs=["Leaf"], top_level_access_tags=["beam"]
        ),
    }
    with Context.from_app(build_app_from_config(config)) as context:
        from_context(context).create_container("child")
    with Context.from_app(build_app_from_config(_whole(uri, tmp_path))) as context:
        client = from_context(context)
        assert [spec.name for spec in client["X"]["Y"]["Z"].specs] == ["Leaf"]
        assert client["X"].specs == [] and client["X"]["Y"].specs == []
        tags = {
            path: context.http_client.get(f"/api/v1/metadata/{path}").json()["data"]["attributes"][
                "access_tags"
            ]
            for path in ("X", "X/Y", "X/Y/Z")
        }
        assert tags["X/Y/Z"] == ["beam"]
        assert not tags["X"] and not tags["X/Y"]
        assert list(client["X"]["Y"]["Z"]) == ["child"]
    # Started again, the path exists: nothing is created twice.
    with Context.from_app(build_app_from_config(config)) as context:
        assert list(from_context(context)) == ["child"]


def test_the_environment_may_ask_for_mount_nodes(uri, tmp_path, monkeypatch):
    from tiled.server.settings import get_settings

    monkeypatch.setenv("TILED_CREATE_MOUNT_NODES_IF_NOT_EXIST", "true")
    get_settings.cache_clear()
    try:
        config = {"catalog": _catalog(uri, tmp_path, init_if_not_exists=True, mount_node="/E")}
        with Context.from_app(build_app(**construct_build_app_kwargs(config))) as context:
            assert list(from_context(context)) == []
    finally:
        get_settings.cache_clear()
    with Context.from_app(build_app_from_config(_whole(uri, tmp_path))) as context:
        assert list(from_context(context)) == ["E"]


async def test_servers_starting_together_create_the_path_once(uri, tmp_path):
    root = from_uri(uri, init_if_not_exists=True)
    await root.startup()
    await root.shutdown()
    roots = [
        from_uri(uri, mount_node="/P/Q", create_mount_nodes_if_not_exist=True) for _ in range(4)
    ]
    try:
        await asyncio.gather(*(r.startup() for r in roots))
        assert len({r._node_id for r in roots}) == 1
    finally:
        for r in roots:
            await r.shutdown()


def test_only_a_catalog_container_can_be_mounted(uri, tmp_path):
    with Context.from_app(build_app_from_config(_whole(uri, tmp_path))) as context:
        client = from_context(context)
        client.write_array(numpy.zeros(2), key="arr")
        client.write_array(numpy.zeros(2), key="under")
    for node, message in [
        ("/arr", "'/arr' is an array, not a container of the catalog"),
        ("/arr/inside", "'/arr/inside' was not found"),
    ]:
        config = {"catalog": _catalog(uri, tmp_path, mount_node=node)}
        with pytest.raises(ValueError, match=message):
            with Context.from_app(build_app_from_config(config)):
                pass
    config = {
        "create_mount_nodes_if_not_exist": True,
        "catalog": _catalog(uri, tmp_path, mount_node="/under/more"),
    }
    with pytest.raises(ValueError, match="'/under' is an array"):
        with Context.from_app(build_app_from_config(config)):
            pass


@pytest.mark.parametrize(
    "mount_node, problem",
    [
        ("/a/../b", "may not contain '.' or '..'"),
        (["a", "b/c"], "each segment is one non-empty key"),
        (["a", ""], "each segment is one non-empty key"),
        (7, "must be a path ('/a/b') or a list of keys, not 7"),
        (["a", 5], "must be a path ('/a/b') or a list of keys"),
    ],
)
def test_malformed_mount_nodes_are_configuration_errors(tmp_path, mount_node, problem):
    config = {"catalog": {"uri": f"sqlite:///{tmp_path}/c.db", "mount_node": mount_node}}
    with pytest.raises(ConfigError) as info:
        construct_build_app_kwargs(config)
    assert len(info.value.problems) == 1, info.value.problems
    assert "catalog.mount_node" in info.value.problems[0]
    assert problem in info.value.problems[0]


@pytest.mark.parametrize("root", ["/", "", []])
def test_the_database_root_is_no_mount(root):
    assert mount_segments(root) == ()


async def test_a_mounted_root_refuses_queries_before_it_has_started(tmp_path):
    root = from_uri(f"sqlite:///{tmp_path}/c.db", init_if_not_exists=True, mount_node="/A")
    with pytest.raises(RuntimeError, match="await its startup"):
        await root.keys_range()


def test_serve_config_names_a_missing_mount_node_in_one_line(tmp_path):
    database = tmp_path / "catalog.db"
    (tmp_path / "config.yml").write_text(
        f"catalog: {{uri: 'sqlite:///{database}', init_if_not_exists: true, mount_node: /gone}}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "tiled", "serve", "config", "config.yml", "--port", "0"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 1, (result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "mount_node '/gone' was not found in the database" in errors[0]


def test_a_mount_node_deleted_while_served_is_gone_and_one_made_anew_is_served(uri, tmp_path):
    """The node is found at its path again once the database has changed: a deleted node's id
    may be a new node's (SQLite gives the largest id again), whose children must not show."""
    _make(_whole(uri, tmp_path), "M")
    config = _trees(
        ("/all", _catalog(uri, tmp_path)), ("/m", _catalog(uri, tmp_path, mount_node="/M"))
    )
    with Context.from_app(build_app_from_config(config)) as context:
        client = from_context(context)
        client["m"].create_container("inside")
        assert list(client["m"]) == ["inside"]
        context.http_client.delete("/api/v1/metadata/all/M", params={"recursive": True})
        client["all"].create_container("N").create_container("not_yours")
        response = context.http_client.get("/api/v1/search/m")
        assert response.status_code == 404, response.text
        refused = context.http_client.post(
            "/api/v1/metadata/m", json={"id": "x", "structure_family": "container"}
        )
        assert refused.status_code == 404, refused.text
        assert response.json()["detail"] == (
            "The node this tree is served from (mount_node) was deleted"
        )
        assert "not_yours" not in response.text
        # Made again at its path: served again, with no restart.
        client["all"].create_container("M").create_container("again")
        assert [
            item["id"] for item in context.http_client.get("/api/v1/search/m").json()["data"]
        ] == ["again"]


def test_a_mount_path_with_a_key_no_node_may_have_creates_nothing(uri, tmp_path):
    _make(_whole(uri, tmp_path))
    config = {
        "create_mount_nodes_if_not_exist": True,
        "catalog": _catalog(uri, tmp_path, mount_node="/X/Y/.zarray"),
    }
    with pytest.raises(ValueError, match="'.zarray' is reserved"):
        with Context.from_app(build_app_from_config(config)):
            pass
    with Context.from_app(build_app_from_config(_whole(uri, tmp_path))) as context:
        assert list(from_context(context)) == []


@pytest.mark.parametrize(
    "name, value",
    [
        ("TILED_CATALOG_METADATA", "[" * 5000 + "]" * 5000),
        ("TILED_CATALOG_MOUNT_NODE", "[" * 5000 + "]" * 5000),
        ("TILED_SECRET_KEYS", "[" * 5000 + "]" * 5000),
        ("TILED_CATALOG_SPECS", "[5]"),
    ],
)
def test_bad_catalog_variables_are_one_line_naming_them(tmp_path, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        construct_build_app_kwargs({"catalog": {"uri": f"sqlite:///{tmp_path}/c.db"}})
    assert len(info.value.problems) == 1, info.value.problems
    assert info.value.problems[0].startswith(f"environment variable {name}: ")


# --- errors name nodes where the client sees them -------------------------------------------------
#
# The catalog names a node in an error by its path below the root it is served as (for a
# mount_node, below that node); the server names it below the path it serves that root at.
# Served whole at the root, the messages are as they always were.

LAYOUTS = {
    "whole": ({}, ""),
    "mounted": ({"mount_node": "/A/sub"}, ""),
    "tree": ({}, "raw"),
    "mounted tree": ({"mount_node": "/A/sub"}, "raw"),
}


def _served(uri, tmp_path, layout, **args):
    """The configuration of ``layout`` and the path at which its catalog's root is served."""
    catalog_args, prefix = LAYOUTS[layout]
    _make(_whole(uri, tmp_path), "A", "A/sub")
    catalog = _catalog(uri, tmp_path, **catalog_args, **args)
    return (_trees((f"/{prefix}", catalog)) if prefix else {"catalog": catalog}), prefix


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_errors_name_nodes_at_the_path_the_client_asked_for(uri, tmp_path, layout):
    config, prefix = _served(uri, tmp_path, layout)

    def at(path: str) -> str:
        return f"{prefix}/{path}" if prefix else path

    with Context.from_app(build_app_from_config(config)) as context:
        client = from_context(context)
        served = client[prefix] if prefix else client
        served.create_container("box").create_container("inner")
        served.write_array(numpy.arange(3), key="x")
        http = context.http_client
        # The details, in the order of the requests below.
        (source,) = served["x"].data_sources()
        (asset,) = source.assets
        changed = source.to_json()
        changed["structure"]["shape"], changed["structure"]["chunks"] = [30], [[30]]
        requests = [
            (http.delete(f"/api/v1/metadata/{at('box')}"), 409,
             f"{at('box')} has children; pass recursive=True to delete them too"),
            (http.post(f"/api/v1/metadata/{prefix}",
                       json={"id": "box", "structure_family": "container"}), 409,
             f"There is already a node named 'box' in /{prefix}"),
            (http.post(f"/api/v1/metadata/{at('box')}",
                       json={"id": "inner", "structure_family": "container"}), 409,
             f"There is already a node named 'inner' in /{at('box')}"),
            (http.delete(f"/api/v1/revisions/{at('box')}", params={"number": 7}), 404,
             f"No revision 7 of {at('box')}"),
            (http.put(f"/api/v1/data_source/{at('x')}",
                      json={"data_source": {**source.to_json(), "id": source.id + 1000}}), 404,
             f"No data_source {source.id + 1000} on /{at('x')}"),
            (http.put(f"/api/v1/data_source/{at('x')}", json={"data_source": changed}), 409,
             f"Data source {source.id} of /{at('x')} is stored by the server; it changes only "
             "by writing data through the data routes"),
            (http.delete(f"/api/v1/asset/{at('x')}", params={"id": asset.id}), 409,
             f"Asset {asset.id} of /{at('x')} holds data the server manages; deleting it "
             "deletes the data. Pass external_only=false to delete it."),
            (http.delete(f"/api/v1/metadata/{at('x')}"), 409,
             f"Deleting {at('x')} would delete data the server manages; "
             "pass external_only=False to delete it"),
        ]  # fmt: skip
        for response, status, detail in requests:
            assert (response.status_code, response.json()["detail"]) == (status, detail)
        # A node whose data are gone says so, under its path, through /api/v1 and /zarr alike.
        deleted = http.delete(
            f"/api/v1/asset/{at('x')}", params={"id": asset.id, "external_only": False}
        )
        assert deleted.status_code == 200, deleted.text
        gone = f"/{at('x')}: its stored data were deleted (the data source has no assets)"
        for url in (f"/api/v1/array/full/{at('x')}", f"/zarr/v3/{at('x')}/zarr.json"):
            response = http.get(url)
            assert (response.status_code, response.json()["detail"]) == (415, gone), url


class VanishingArray:
    """Registered data whose reads fail (a disk gone after the file was opened)."""

    structure_family = "array"
    specs: list = []

    @classmethod
    def from_uris(cls, data_uri: str, **kwargs):
        return cls()

    @classmethod
    def from_catalog(cls, data_source, node, /, **kwargs):
        return cls()

    def structure(self):
        from tiled.structures.array import ArrayStructure

        return ArrayStructure.from_array(numpy.zeros(3))

    def metadata(self) -> dict:
        return {}

    def read(self, slice=None):
        raise OSError("the disk is gone")


class FileGroup:
    """A registered file as a container of one array (upstream's style), read when opened."""

    structure_family = "container"
    specs: list = []

    def __init__(self, data_uri: str):
        from tiled.adapters.array import ArrayAdapter

        size = len(Path(data_uri.removeprefix("file://localhost")).read_bytes())
        self._members = {"y": ArrayAdapter.from_array(numpy.arange(size))}

    @classmethod
    def from_uris(cls, data_uri: str, **kwargs):
        return cls(data_uri)

    @classmethod
    def from_catalog(cls, data_source, node, /, **kwargs):
        return cls(data_source.assets[0].data_uri)

    def metadata(self) -> dict:
        return {}

    def keys(self):
        return list(self._members)

    def __getitem__(self, key: str):
        return self._members[key]

    def __len__(self) -> int:
        return len(self._members)

    def structure(self):
        return {"keys": self.keys()}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_registered_files_that_fail_are_named_where_the_client_sees_them(uri, tmp_path, layout):
    from tiled.structures.array import ArrayStructure
    from tiled.structures.core import StructureFamily
    from tiled.structures.data_source import Asset, DataSource, Management

    files = tmp_path / "files"
    files.mkdir()
    (files / "a.bin").write_bytes(b"\0")
    (files / "group.bin").write_bytes(b"\0\0")
    mimetype, group = "application/x-vanishing", "application/x-file-group"
    config, prefix = _served(
        uri, tmp_path, layout, readable_storage=[str(files)], lookup_cache_ttl=0,
        adapters_by_mimetype={
            mimetype: f"{__name__}:VanishingArray", group: f"{__name__}:FileGroup"
        },
    )  # fmt: skip

    def at(path: str) -> str:
        return f"{prefix}/{path}" if prefix else path

    with Context.from_app(build_app_from_config(config)) as context:
        served = from_context(context)
        served = served[prefix] if prefix else served
        served.new(
            "array", key="vanishing",
            data_sources=[DataSource(
                StructureFamily.array, structure=ArrayStructure.from_array(numpy.zeros(3)),
                mimetype=mimetype, management=Management.external,
                assets=[Asset(f"file://localhost{files}/a.bin", False, "data_uri")],
            )],
        )  # fmt: skip
        served.new(
            "container", key="group",
            data_sources=[DataSource(
                StructureFamily.container, mimetype=group, management=Management.external,
                assets=[Asset(f"file://localhost{files}/group.bin", False, "data_uri")],
            )],
        )  # fmt: skip
        (files / "group.bin").unlink()
        http = context.http_client
        # Read when its data are asked for.
        response = http.get(f"/api/v1/array/full/{at('vanishing')}")
        assert response.status_code == 415, response.text
        assert response.json()["detail"] == (
            f"/{at('vanishing')}: cannot read its {mimetype} data: OSError: the disk is gone"
        )
        # Found missing when a path into it is looked up.
        response = http.get(f"/api/v1/metadata/{at('group')}/y")
        assert response.status_code == 415, response.text
        assert response.json()["detail"].startswith(
            f"/{at('group')}: cannot open its {group} data: a file it needs is missing"
        )


async def test_errors_of_nodes_changed_meanwhile_name_them_below_the_mount(uri, tmp_path):
    """What a node learns only when it writes (it was deleted since it was looked up, a key
    registered twice) is named below the mounted node, and below where the tree is served."""
    from tiled.config.build import mount
    from tiled.errors import NoSuchEntry
    from tiled.server.errors import error_response
    from tiled.structures.array import ArrayStructure

    whole = from_uri(uri, init_if_not_exists=True)
    await whole.startup()
    try:
        await (await whole.create_node(key="A", structure_family="container")).create_node(
            key="sub", structure_family="container"
        )
    finally:
        await whole.shutdown()
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.h5").write_bytes(b"\0")
    root = from_uri(uri, mount_node="/A/sub", readable_storage=[files])
    await root.startup()
    try:
        box = await root.create_node(key="box", structure_family="container")
        stale = await root.lookup_adapter(["box"])
        await box.delete()
        refusals = [
            await _refusal(stale.delete()),
            await _refusal(stale.replace_metadata(metadata={"a": 1})),
            await _refusal(stale.create_node(key="k", structure_family="container")),
        ]
        for refusal in refusals:
            assert isinstance(refusal, NoSuchEntry) and str(refusal) == "No such entry: ['box']"
            response = error_response(refusal, mount([(("raw",), root)]))
            assert json.loads(response.body) == {"detail": "No such entry: ['raw', 'box']"}
        child = {
            "key": "twice", "structure_family": "array",
            "data_sources": [{
                "structure_family": "array", "mimetype": "application/x-hdf5",
                "structure": ArrayStructure.from_array(numpy.zeros(1)).to_json(),
                "management": "external",
                "assets": [{"data_uri": f"file://localhost{files}/a.h5", "is_directory": False,
                            "parameter": "data_uri", "num": None}],
            }],
        }  # fmt: skip
        results = await root.register_children([child, child], files_read=True)
        assert results[0] is None
        assert str(results[1]) == "There is already a node named 'twice' in /"
    finally:
        await root.shutdown()


async def _refusal(call) -> Exception | None:
    try:
        await call
    except Exception as err:  # noqa: BLE001 - the test looks at what it is
        return err
    return None
