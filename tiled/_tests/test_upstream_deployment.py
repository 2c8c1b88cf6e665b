"""A deployment built by upstream Tiled 0.2.20 is served by this server unchanged, and back.

Upstream's released package (``tiled[all]==0.2.20``, in a virtual environment of its own)
serves a catalog and an authentication database from one YAML configuration, with a password
user (alice, an administrator); alice logs in, makes an API key, and with upstream's client writes
arrays, tables and metadata and registers a directory with upstream's `tiled register`. Then
upstream stops and this server starts on the same configuration, databases and storage: the old
API key and the password work, and the principal is the same. Upstream's client must read the
same tree, metadata, revisions and values; zarr-python must read every array and column in
both zarr formats; a new write must succeed; and upstream, started again on the same files,
must read everything, including what this server wrote.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy
import pytest

from .isolated_python import run_isolated
from .postgres import temporary_database
from .processes import server_process, without_pythonpath

pytestmark = pytest.mark.slow

PASSWORD = "alice-password"

WRITE = r"""
import sys, numpy, pandas
from tiled.client import from_uri
client = from_uri(sys.argv[1], api_key=sys.argv[2])
client.write_array(numpy.arange(12.0).reshape(3, 4), key="a", metadata={"color": "red"})
group = client.create_container("g", metadata={"n": 1}, specs=["run"])
group.write_array(numpy.arange(2000, dtype="int32").reshape(20, 100), key="b", dims=["y", "x"])
group.write_table(pandas.DataFrame({"A": [1, 2, 3], "B": [1.5, 2.5, 3.5]}), key="t")
group["t"].update_metadata({"n": 2})
client["a"].update_metadata({"color": "blue"})
client.create_container("empty")
group.write_sparse(
    coords=numpy.array([[0, 2, 5]]), data=numpy.array([1.5, 2.5, 3.5]), shape=(6,), key="s"
)
import awkward
client.write_awkward(awkward.Array([[1, 2], [], [3]]), key="ragged_lists")
"""

WRITE_AGAIN = r"""
import sys, numpy
from tiled.client import from_uri
client = from_uri(sys.argv[1], api_key=sys.argv[2])
client["g"].write_array(numpy.full((2, 2), 7, dtype="uint8"), key="new", metadata={"by": "fork"})
client["g"].update_metadata({"n": 3})
client["g"].write_sparse(
    coords=numpy.array([[0, 3], [1, 2]]), data=numpy.array([4.0, 5.0]), shape=(4, 3), key="s2"
)
"""

# Everything upstream's client can tell about the tree, as JSON.
READ = r"""
import json, sys
from tiled.client import from_uri
client = from_uri(sys.argv[1], api_key=sys.argv[2])

def walk(node, path, out):
    entry = {
        "family": str(node.structure_family.value if hasattr(node.structure_family, "value")
                      else node.structure_family),
        "metadata": dict(node.metadata),
        "specs": [spec.name for spec in node.specs],
    }
    if path:
        entry["revisions"] = [
            dict(revision["attributes"]["metadata"]) for revision in node.metadata_revisions[:]
        ]
    if path.startswith("/files/") or entry["family"] == "awkward":
        pass  # registered files and awkward data: this server reads them once it has adapters
    elif entry["family"] == "container":
        entry["keys"] = list(node)
        for key in node:
            walk(node[key], f"{path}/{key}", out)
    elif entry["family"] == "array":
        entry["values"] = node.read().tolist()
        entry["dtype"] = str(node.dtype)
    elif entry["family"] == "table":
        entry["values"] = node.read().to_dict(orient="list")
    elif entry["family"] == "sparse":
        entry["values"] = node.read().todense().tolist()
    out[path or "/"] = entry

out = {}
walk(client, "", out)
print(json.dumps(out, sort_keys=True))
"""


CONFIG = """
authentication:
  providers:
    - provider: toy
      authenticator: tiled.authenticators:DictionaryAuthenticator
      args:
        users_to_passwords:
          alice: {password}
  secret_keys: ["a-secret-key-for-signing-tokens-of-this-test-only"]
  tiled_admins:
    - provider: toy
      id: alice
database:
  uri: {authn_uri}
  init_if_not_exists: true
trees:
  - path: /
    tree: catalog
    args:
      uri: {catalog_uri}
      writable_storage: {storage}
      readable_storage: [{files}]
      init_if_not_exists: true
"""


def _login(url: str) -> dict:
    """Alice's tokens, from her password, and who the server says she is."""
    response = httpx.post(
        f"{url}/api/v1/auth/provider/toy/token", data={"username": "alice", "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    tokens = response.json()
    whoami = httpx.get(
        f"{url}/api/v1/auth/whoami",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )
    assert whoami.status_code == 200, whoami.text
    return {"tokens": tokens, "whoami": whoami.json()}


def _new_api_key(url: str, access_token: str) -> str:
    response = httpx.post(
        f"{url}/api/v1/auth/apikey",
        json={"expires_in": None, "scopes": ["inherit"], "note": "made under upstream"},
        headers={"Authorization": f"Bearer {access_token}"},
    )
    assert response.status_code == 200, response.text
    return response.json()["secret"]


def _run(python: Path, script: str, url: str, api_key: str) -> str:
    result = run_isolated(python, script, url, api_key)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _read(python: Path, url: str, api_key: str) -> dict:
    return json.loads(_run(python, READ, url, api_key).strip().splitlines()[-1])


@pytest.fixture(params=["sqlite", "postgresql"])
def database_uris(request, tmp_path):
    """(catalog, authentication) database URIs on one back end."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.db'}", f"sqlite:///{tmp_path / 'authn.db'}"
        return
    with temporary_database("tiled_upstream_catalog") as catalog:
        with temporary_database("tiled_upstream_authn") as authn:
            yield catalog, authn


def _zarr_values(url: str, path: str, zarr_format: int, api_key: str):
    import zarr
    from zarr.storage import FsspecStore

    store = FsspecStore.from_url(
        f"{url}/zarr/v{zarr_format}/{path}",
        read_only=True,
        storage_options={"headers": {"Authorization": f"Apikey {api_key}"}},
    )
    return zarr.open(store, mode="r", zarr_format=zarr_format)


def test_upstream_deployment_moves_here_and_back(upstream_tiled, database_uris, tmp_path):
    upstream = [str(upstream_tiled.parent / "tiled")]
    ours = [str(Path(sys.executable).parent / "tiled")]
    files = tmp_path / "files"
    files.mkdir()
    (files / "table.csv").write_text("x,y\n1,2\n3,4\n")
    catalog_uri, authn_uri = database_uris
    config = tmp_path / "config.yml"
    config.write_text(
        CONFIG.format(
            password=PASSWORD, authn_uri=authn_uri, catalog_uri=catalog_uri,
            storage=tmp_path / "data", files=files,
        )
    )  # fmt: skip
    serve = ["serve", "config", str(config)]
    with server_process([*upstream, *serve], tmp_path, env=without_pythonpath()) as url:
        alice = _login(url)
        api_key = _new_api_key(url, alice["tokens"]["access_token"])
        _run(upstream_tiled, WRITE, url, api_key)
        subprocess.run(
            [*upstream, "register", url, str(files), "--prefix", "files",
             "--api-key", api_key],
            check=True, capture_output=True, cwd=tmp_path, env=without_pythonpath(),
        )  # fmt: skip
        written = _read(upstream_tiled, url, api_key)
    assert written["/files"]["keys"] == ["table"]
    assert written["/a"]["values"] == numpy.arange(12.0).reshape(3, 4).tolist()
    assert written["/a"]["revisions"] == [{"color": "red"}]
    assert written["/g/s"]["values"] == [1.5, 0.0, 2.5, 0.0, 0.0, 3.5]
    assert written["/ragged_lists"]["family"] == "awkward"

    with server_process([*ours, *serve], tmp_path) as url:
        # The password and the API key made under upstream work; alice is the same principal.
        assert _login(url)["whoami"]["uuid"] == alice["whoami"]["uuid"]
        assert _read(upstream_tiled, url, api_key) == written
        for zarr_format in (2, 3):
            for path in ("a", "g/b", "g/s"):
                values = _zarr_values(url, path, zarr_format, api_key)[...].tolist()
                assert values == written[f"/{path}"]["values"]
            table = _zarr_values(url, "g/t", zarr_format, api_key)
            for column in ("A", "B"):
                assert table[column][...].tolist() == written["/g/t"]["values"][column]
        # The CSV file upstream registered is read here too, natively and as zarr.
        headers = {"Authorization": f"Apikey {api_key}"}
        csv = httpx.get(f"{url}/api/v1/table/full/files/table", headers=headers,
                        params={"format": "application/json"})  # fmt: skip
        assert csv.status_code == 200, csv.text
        assert _zarr_values(url, "files/table", 3, api_key)["y"][...].tolist() == [2, 4]
        # The awkward array upstream stored is read here, natively and as a zarr group of its
        # buffers (with its form and length in the group's attributes).
        import awkward
        import zarr
        from fsspec.implementations.http import HTTPFileSystem

        fs = HTTPFileSystem(client_kwargs={"headers": headers})
        for zarr_format in (2, 3):
            group = zarr.open_group(
                fs.get_mapper(f"{url}/zarr/v{zarr_format}/ragged_lists"), mode="r"
            )
            layout = group.attrs["awkward"]
            buffers = {name: group[name][...] for name in group.array_keys()}
            rebuilt = awkward.from_buffers(layout["form"], layout["length"], buffers)
            assert rebuilt.tolist() == [[1, 2], [], [3]]
        assert httpx.get(f"{url}/zarr/v3/", headers=headers).status_code == 200
        _run(upstream_tiled, WRITE_AGAIN, url, api_key)
        after = _read(upstream_tiled, url, api_key)
        # A key made here works for upstream too.
        new_key = _new_api_key(url, _login(url)["tokens"]["access_token"])
    assert after["/g/new"]["values"] == [[7, 7], [7, 7]]
    assert after["/g/s2"]["values"] == [[0, 4.0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 5.0]]
    assert after["/g"]["metadata"] == {"n": 3}
    assert after["/g"]["revisions"] == [{"n": 1}]

    with server_process([*upstream, *serve], tmp_path, env=without_pythonpath()) as url:
        assert _read(upstream_tiled, url, api_key) == after
        assert _read(upstream_tiled, url, new_key) == after
        assert _login(url)["whoami"]["uuid"] == alice["whoami"]["uuid"]


READ_HERE_WRITTEN = r"""
import sys
from tiled.client import from_uri
client = from_uri(sys.argv[1], api_key=sys.argv[2])
print(client["x"].read().tolist(), dict(client["x"].metadata), client["t"].read()["c"].tolist(),
      client["s"].read().todense().tolist(), list(client["g"]))
"""


async def _write_here(catalog_uri: str, storage: Path) -> None:
    """Create and write a catalog with this package (the code the server's routes call)."""
    import pandas

    from tiled.catalog import from_uri

    from .test_catalog import array_source, make, sparse_source, table_source

    root = from_uri(catalog_uri, writable_storage=storage, init_if_not_exists=True)
    try:
        array = await make(
            root, "x", "array", {"made": "here"}, sources=[array_source(numpy.arange(4))]
        )
        await array.write(numpy.arange(4))
        frame = pandas.DataFrame({"c": [1.5, 2.5]})
        table = await make(root, "t", "table", sources=[table_source(frame)])
        await table.write(frame)
        coo = await make(root, "s", "sparse", sources=[sparse_source((3,), ((3,),))])
        await coo.write(numpy.array([[2]]), numpy.array([7.0]))
        group = await make(root, "g")
        await make(group, "inner")
        await array.replace_metadata({"made": "here"})  # a revision too
    finally:
        await root.shutdown()


def test_a_catalog_made_here_is_served_by_upstream(upstream_tiled, database_uris, tmp_path):
    """A catalog created and written by this server opens with upstream with no step."""
    import asyncio

    catalog_uri, _ = database_uris
    storage = tmp_path / "data"
    key = "secret"
    upstream = [str(upstream_tiled.parent / "tiled")]
    serve = ["serve", "catalog", catalog_uri, "-w", str(storage), "--api-key", key]
    asyncio.run(_write_here(catalog_uri, storage))
    with server_process([*upstream, *serve], tmp_path, env=without_pythonpath()) as url:
        printed = _run(upstream_tiled, READ_HERE_WRITTEN, url, key).strip()
    assert printed == "[0, 1, 2, 3] {'made': 'here'} [1.5, 2.5] [0.0, 0.0, 7.0] ['inner']"
