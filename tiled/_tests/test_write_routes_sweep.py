"""Every write route x every structure family, with valid-looking but wrong inputs: no 5xx.

The routes come from the application's own route table (every PUT, PATCH, POST and DELETE
of ``/api/v1``, and every method on the zarr mounts), and their query parameters from the
routes' declarations, so a route added later is swept without editing this file. Each answer
must be a 4xx with a JSON ``detail`` or a success; a 5xx fails the test and names the request.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

import httpx
import numpy
import pandas
import pytest
import sparse as sparse_module
from starlette.routing import Mount

from tiled.catalog import from_uri
from tiled.client import Context, from_context
from tiled.server.app import build_app
from tiled.structures.core import StructureFamily

from .live_server import serve

KEY = "secret"
HEADERS = {"Authorization": f"Apikey {KEY}"}
WRITE_METHODS = ("PUT", "PATCH", "POST", "DELETE")


def _make_array(client: Any) -> None:
    client.write_array(numpy.arange(12.0).reshape(3, 4), key="array")


def _make_table(client: Any) -> None:
    client.write_table(pandas.DataFrame({"a": [1, 2], "b": [0.5, 1.5]}), key="table")


def _make_sparse(client: Any) -> None:
    coo = sparse_module.COO(coords=[[0, 2]], data=[1.0, 2.0], shape=(4,))
    client.write_sparse(coords=coo.coords, data=coo.data, shape=coo.shape, key="sparse")


def _make_container(client: Any) -> None:
    client.create_container("container").write_array([1, 2, 3], key="inner")


# How a node of each family is made here; families missing (upstream's others, until this
# server writes them) are created by POST /metadata if the server accepts that, else skipped.
MAKERS = {
    StructureFamily.array: _make_array,
    StructureFamily.table: _make_table,
    StructureFamily.sparse: _make_sparse,
    StructureFamily.container: _make_container,
}


@dataclass(frozen=True)
class Probe:
    method: str
    url: str
    params: dict[str, str]
    content: bytes
    content_type: str

    def describe(self) -> str:
        return f"{self.method} {self.url} params={self.params} body={self.content[:60]!r} ({self.content_type})"


# Bodies that look like something a route takes, but are wrong for it or for the node.
BODIES = [
    (b"", "application/octet-stream"),
    (numpy.arange(5, dtype="<f8").tobytes(), "application/octet-stream"),
    (b"\x00\x01not arrow", "application/vnd.apache.arrow.file"),
    (b"PAR1garbage", "application/x-parquet"),
    (b"{}", "application/json"),
    (b"{not json", "application/json"),
    (
        json.dumps({"data_source": {"structure_family": "array", "id": 1}}).encode(),
        "application/json",
    ),
    (
        json.dumps([{"op": "replace", "path": "/x", "value": 1}]).encode(),
        "application/json-patch+json",
    ),
    (json.dumps({"metadata": [1, 2]}).encode(), "application/merge-patch+json"),
    (b"\x81\xa1a\x01", "application/x-msgpack"),
]

# Values for query parameters: absent, typical, out of range, malformed.
QUERY_VALUES = ["", "0", "1", "-1", "99999999", "1,2", "0,0,0", "x", "true", "1,-1", "[0:1]"]


def _write_routes(app: Any) -> list[tuple[str, str, list[str]]]:
    """``(method, path template, query parameter names)`` of every write route of /api/v1,
    from the application's OpenAPI document (its route table, dependencies' parameters
    included)."""
    found = []
    for path, operations in app.openapi()["paths"].items():
        if not path.startswith("/api/v1"):
            continue
        for method, operation in operations.items():
            if method.upper() in WRITE_METHODS:
                names = sorted(
                    p["name"] for p in operation.get("parameters", []) if p["in"] == "query"
                )
                found.append((method.upper(), path, names))
    return found


def _zarr_mounts(app: Any) -> list[str]:
    return [route.path for route in app.routes if isinstance(route, Mount) and "zarr" in route.path]


def _probes(routes, mounts, paths: list[str]) -> list[Probe]:
    probes = []
    for (method, template, names), path in itertools.product(routes, paths):
        url = template.replace("{path:path}", path).replace("{path}", path)
        # Each body with no query parameters; each parameter alone with each value; all
        # parameters together with plausible values.
        for content, content_type in BODIES:
            probes.append(Probe(method, url, {}, content, content_type))
        for name, value in itertools.product(names, QUERY_VALUES):
            for content, content_type in BODIES[:3] + BODIES[6:7]:
                probes.append(Probe(method, url, {name: value}, content, content_type))
        together = dict.fromkeys(names, "1")
        for content, content_type in BODIES:
            probes.append(Probe(method, url, together, content, content_type))
    for mount, path, key in itertools.product(
        mounts, paths, ["", "zarr.json", ".zarray", "c/0/0", "0.0"]
    ):
        for method in WRITE_METHODS:
            url = "/".join(part for part in (mount, path, key) if part)
            probes.append(Probe(method, url, {}, b"\x00" * 8, "application/octet-stream"))
    return probes


@pytest.fixture
def server(tmp_path):
    tree = from_uri(
        f"sqlite:///{tmp_path / 'catalog.db'}", writable_storage=tmp_path / "data",
        init_if_not_exists=True,
    )  # fmt: skip
    app = build_app(tree, authentication={"single_user_api_key": KEY})
    with serve(app) as live:
        yield app, live


def test_no_write_route_answers_5xx_for_any_family(server):
    app, live = server
    paths = ["", "missing"]
    with httpx.Client(base_url=live.url, headers=HEADERS, timeout=60) as http:
        made = []
        with Context.from_any_uri(live.url, api_key=KEY)[0] as context:
            client = from_context(context)
            for family in StructureFamily:
                maker = MAKERS.get(family)
                if maker is not None:
                    maker(client)
                    made.append(family.value)
                    continue
                response = http.post(
                    "/api/v1/metadata/",
                    json={"id": family.value, "structure_family": family.value,
                          "data_sources": [{"structure_family": family.value, "structure": {}}]},
                )  # fmt: skip
                assert response.status_code < 500, response.text
                if response.is_success:
                    made.append(family.value)
        paths += made + ["container/inner", "table/a"]
        routes = _write_routes(app)
        assert len(routes) >= 10, routes  # the route table was read
        assert any("/data_source/" in path for _, path, _ in routes)
        failures = []
        probes = _probes(routes, _zarr_mounts(app), paths)
        # Deletions last, so that the other probes meet the nodes (and then the deleted ones).
        for probe in sorted(probes, key=lambda p: p.method == "DELETE"):
            response = http.request(
                probe.method, probe.url, params=probe.params, content=probe.content,
                headers={"Content-Type": probe.content_type},
            )  # fmt: skip
            if response.status_code >= 500:
                failures.append(f"{response.status_code} {probe.describe()}: {response.text[:200]}")
            elif response.status_code >= 400:
                body = response.json() if "json" in response.headers.get("content-type", "") else {}
                if not body.get("detail"):
                    failures.append(f"{response.status_code} without detail: {probe.describe()}")
        assert not failures, "\n".join(failures[:40]) + f"\n({len(failures)} in all)"
