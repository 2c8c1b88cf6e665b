"""Search queries over HTTP on a catalog (SQLite and PostgreSQL) and an in-memory tree, with
metadata covering nested keys, dotted keys, lists, ints, floats and numeric strings, booleans,
null, unicode, large and negative numbers, missing keys, specs and structure families.

The catalogs must agree with each other and with the in-memory tree where this package says
they do; hostile input must be a 4xx with a JSON ``detail``, never a 500; and where upstream
Tiled 0.2.20 answers sensibly on both of its databases, this server must answer the same
(upstream's server runs from the shared ``upstream_tiled`` environment, built once a session,
or the one ``TILED_TEST_UPSTREAM_PYTHON`` names).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy
import pytest

from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter
from tiled.catalog import from_uri, in_memory
from tiled.client import Context, from_context
from tiled.errors import InvalidQuery
from tiled.queries import Contains, FullText, KeyPresent, Regex
from tiled.server.app import build_app

from .isolated_python import run_isolated
from .postgres import temporary_database
from .processes import server_process, without_pythonpath

# (key, metadata, specs) of the containers; then one array.
NODES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("a", {"color": "red", "n": 1, "x": 1.5, "s": "10", "flag": True,
           "nested": {"deep": {"v": 3}}, "tags": ["a", "b"], "u": "café",
           "big": 2**53, "neg": -5, "note": "hello world"}, ["run"]),
    ("b", {"color": "blue", "n": 2, "x": -2.5, "s": "9", "flag": False,
           "nested": {"deep": {"v": "3"}}, "tags": ["b", "c"], "u": "naïve",
           "big": -(2**62), "neg": -1e10, "note": "Hello there", "a.b": 1}, ["run", "xdi"]),
    ("c", {"color": "Red", "n": "3", "x": 0, "flag": None, "nested": {"deep": None},
           "tags": [], "u": "日本語", "note": "WORLD peace"}, ["other"]),
    ("d", {"color": "green", "n": 1.0, "tags": ["a", 1, True, None],
           "nested": {"other": 1}, "a": {"b": 2}}, ["xdi"]),
    ("e", {}, []),
    ("f", {"n": True, "color": ["red"], "x": 1e300, "note": "hello-world foo_bar"}, []),
    ("g", {"n": None, "s": "abc", "nested": "flat", "x": 10, "note": "a.b c"}, []),
    ("h", {"n": 0, "s": "", "color": "RED", "x": -0.0, "tags": ["a"], "u": "CAFÉ"}, ["run"]),
]  # fmt: skip
ARRAY = ("arr", {"color": "red", "n": 5, "x": 2}, ["xdi"])
BACKENDS = ["sqlite", "postgresql", "memory"]
API_KEY = "secret"

# Writes the nodes with whichever client runs it (ours, or upstream's in its environment).
WRITE = r"""
import json, sys, numpy
from tiled.client import from_uri
nodes, array = json.loads(sys.argv[3])
client = from_uri(sys.argv[1], api_key=sys.argv[2])
for key, metadata, specs in nodes:
    client.create_container(key, metadata=metadata, specs=specs)
key, metadata, specs = array
client.write_array(numpy.arange(3), key=key, metadata=metadata, specs=specs)
"""


def _memory_tree() -> MapAdapter:
    children: dict[str, Any] = {
        key: MapAdapter({}, metadata=metadata, specs=specs) for key, metadata, specs in NODES
    }
    key, metadata, specs = ARRAY
    children[key] = ArrayAdapter.from_array(numpy.arange(3), metadata=metadata, specs=specs)
    return MapAdapter(children)


def _fill(context: Context) -> None:
    client = from_context(context)
    for key, metadata, specs in NODES:
        client.create_container(key, metadata=metadata, specs=specs)
    key, metadata, specs = ARRAY
    client.write_array(numpy.arange(3), key=key, metadata=metadata, specs=specs)


@pytest.fixture(scope="module", params=BACKENDS)
def served(request, tmp_path_factory) -> Iterator[tuple[str, Context]]:
    """(back end, context) holding the nodes, built once for the module."""
    if request.param == "memory":
        with Context.from_app(build_app(_memory_tree())) as context:
            yield request.param, context
        return
    storage = tmp_path_factory.mktemp("data")
    if request.param == "sqlite":
        with Context.from_app(build_app(in_memory(writable_storage=storage))) as context:
            _fill(context)
            yield request.param, context
        return
    with temporary_database("tiled_queries_compat") as uri:
        catalog = from_uri(uri, writable_storage=storage, init_if_not_exists=True)
        with Context.from_app(build_app(catalog)) as context:
            _fill(context)
            yield request.param, context


def _filter(name: str, **fields: Any) -> list[tuple[str, str]]:
    return [(f"filter[{name}][condition][{field}]", value) for field, value in fields.items()]


def _search(context: Context, params: list[tuple[str, str]]) -> httpx.Response:
    return context.http_client.get("/api/v1/search/", params=[*params, ("fields", "")])


def _keys(context: Context, params: list[tuple[str, str]]) -> list[str]:
    response = _search(context, params)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["data"]]


# --- bugs found by comparing back ends and upstream -------------------------------------------


def test_fulltext_finds_words_joined_by_punctuation(served):
    """SQLite split metadata on white space only, so "foo" missed "hello-world foo_bar", which
    PostgreSQL (and upstream, on both databases) find."""
    backend, context = served
    if backend == "memory":
        pytest.skip("the in-memory tree splits on white space, as upstream's does")
    client = from_context(context)
    assert sorted(client.search(FullText("foo"))) == ["f"]
    assert sorted(client.search(FullText("WORLD"))) == ["a", "c", "f"]
    assert sorted(client.search(FullText("hello"))) == ["a", "b", "f"]
    # "CAFÉ" of h is found only where the database folds the case of non-ASCII letters:
    # PostgreSQL does by its locale's character types (a cluster made with the C locale, as
    # the tests' throwaway clusters are, does not).
    assert sorted(client.search(FullText("café"))) in (["a", "h"], ["a"])
    if backend == "sqlite":
        assert sorted(client.search(FullText("café"))) == ["a", "h"]
    assert list(client.search(FullText("caf"))) == []  # whole words only
    assert sorted(client.search(FullText("peace nothing"))) == ["c"]  # any of the words


def test_contains_names_a_member_of_an_object(served):
    """Contains on an object asks for a member name, as the in-memory tree (and upstream, on
    both databases) answer; the catalogs only looked inside arrays."""
    _, context = served
    client = from_context(context)
    assert sorted(client.search(Contains("nested", "deep"))) == ["a", "b", "c"]
    assert list(client.search(Contains("nested", "flat"))) == []  # a string has no members
    assert list(client.search(Contains("nested", 1))) == []  # member names are strings
    assert sorted(client.search(Contains("tags", "a"))) == ["a", "d", "h"]
    assert list(client.search(Contains("note", "hello"))) == []  # not a substring search


@pytest.mark.parametrize(
    "spelling, truth",
    [("true", True), ("True", True), ("TRUE", True), ("1", True),
     ("false", False), ("False", False), ("0", False)],
)  # fmt: skip
def test_boolean_fields_take_the_spellings_upstream_takes(served, spelling, truth):
    """Upstream's server reads ``case_sensitive`` and ``exists`` as FastAPI booleans; this one
    took only JSON ``true``/``false`` and refused ``True`` (a Python bool through str()) or
    ``1`` with a 400."""
    _, context = served
    params = _filter("regex", key="note", pattern="^H", case_sensitive=spelling)
    assert _keys(context, params) == (["b"] if truth else ["a", "b", "f"])
    present = _keys(context, _filter("keypresent", key="flag", exists=spelling))
    assert present == (["a", "b", "c"] if truth else ["d", "e", "f", "g", "h", "arr"])
    assert Regex.decode(key="k", pattern="p", case_sensitive=spelling).case_sensitive is truth
    assert KeyPresent.decode(key="k", exists=spelling).exists is truth


def test_boolean_fields_refuse_other_words():
    with pytest.raises(InvalidQuery, match="maybe"):
        Regex.decode(key="k", pattern="p", case_sensitive="maybe")
    with pytest.raises(InvalidQuery, match="2"):
        KeyPresent.decode(key="k", exists="2")


def _regex(pattern: str) -> list[tuple[str, str]]:
    return _filter("regex", key="note", pattern=pattern, case_sensitive="true")


# name -> (parameters, the back ends that must refuse them with a 400): the database failed
# the statement before, a 500.
UNRUNNABLE = {
    "nul in a key": (_filter("eq", key="co\x00lor", value='"red"'), {"sqlite", "postgresql"}),
    "nul in a value": (_filter("eq", key="color", value='"a\\u0000b"'), {"postgresql"}),
    "nul in full text": (_filter("fulltext", text="a\x00b"), {"postgresql"}),
    "named group": (_regex("(?P<x>h)"), {"postgresql"}),
    "possessive quantifier": (_regex("l++"), {"postgresql"}),
    "atomic group": (_regex("(?>l)"), {"postgresql"}),
    "repetition past 255": (_regex("l{0,1000}"), {"postgresql"}),
    "scoped flag": (_regex("(?i:H)"), {"postgresql"}),
    # Valid in Python; PostgreSQL fails the statement (SQLSTATE 2201B, which the server reads).
    "repeated lookahead": (_regex("(?=h)*"), {"postgresql"}),
    "unknown character class": (_regex("[[:foo:]]"), {"postgresql"}),
    "like ends in escape": (
        _filter("like", key="note", pattern=json.dumps("hello\\")),
        {"sqlite", "postgresql"},
    ),
}


@pytest.mark.parametrize("case", list(UNRUNNABLE))
def test_what_the_database_cannot_run_is_a_400(served, case):
    backend, context = served
    params, refused_on = UNRUNNABLE[case]
    response = _search(context, params)
    if backend in refused_on:
        assert response.status_code == 400, response.text
        assert isinstance(response.json()["detail"], str)
    else:
        assert response.status_code in (200, 400), response.text


# --- hostile input: a 4xx with a detail, never a 500 -----------------------------------------

HOSTILE = {
    "regex invalid": _regex("("),
    "regex bad case_sensitive": _filter("regex", key="note", pattern="h", case_sensitive="x"),
    "eq value not json": _filter("eq", key="color", value="red"),
    "eq value missing": _filter("eq", key="color"),
    "eq unknown field": _filter("eq", key="color", value='"red"', extra="1"),
    "eq unequal repeats": [*_filter("eq", key="color", value='"red"'), *_filter("eq", key="n")],
    "eq huge integer": _filter("eq", key="x", value="1" + "0" * 30),
    "eq deep json": _filter("eq", key="x", value="[" * 5000 + "]" * 5000),
    "eq lone surrogate": _filter("eq", key="color", value='"\\ud800"'),
    "comparison bad operator": _filter("comparison", operator="eq", key="n", value="1"),
    "comparison with null": _filter("comparison", operator="lt", key="n", value="null"),
    "in not a list": _filter("in", key="n", value="1"),
    "keys_filter not json": _filter("keys_filter", keys="a"),
    "specs not json": _filter("specs", include="run", exclude="[]"),
    "structure family unknown": _filter("structure_family", value="nonsense"),
    "keypresent bad exists": _filter("keypresent", key="n", exists="maybe"),
    "offset past 64 bits": [("page[offset]", str(2**64))],
    "offset negative": [("page[offset]", "-1")],
    "limit not a number": [("page[limit]", "abc")],
    "limit too large": [("page[limit]", "100000")],
    "sort malformed": [("sort", "n;drop")],
    "sort repeated key": [("sort", "n,n")],
    "fields unknown": [("fields", "bogus")],
}


# Values no database can bind or compare, which the in-memory tree compares (finding nothing).
MEMORY_ANSWERS = {"eq huge integer", "eq lone surrogate", "comparison with null"}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_input_is_a_4xx_with_a_detail(served, case):
    backend, context = served
    response = context.http_client.get("/api/v1/search/", params=HOSTILE[case])
    if backend == "memory" and case in MEMORY_ANSWERS:
        assert response.status_code == 200, response.text
        return
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["detail"]


@pytest.mark.parametrize(
    "params",
    [_filter("nonsense", key="a", value="1"), [("filter[eq]", "x")], [("filter", "x")]],
)
def test_unknown_filters_are_ignored_as_upstream_ignores_them(served, params):
    _, context = served
    assert len(_keys(context, params)) == len(NODES) + 1


# --- side by side with upstream ---------------------------------------------------------------

# Queries whose answers upstream gives alike on SQLite and PostgreSQL (and this server too):
# as parameters, with the expected keys in order.
AGREED = {
    "eq string": _filter("eq", key="color", value='"red"'),
    "eq nested": _filter("eq", key="nested.deep.v", value="3"),
    "eq nested string": _filter("eq", key="nested.deep.v", value='"3"'),
    "eq 2**53": _filter("eq", key="big", value=str(2**53)),
    "eq negative float": _filter("eq", key="neg", value="-1e10"),
    "eq unicode": _filter("eq", key="u", value='"日本語"'),
    "eq dotted key is a path": _filter("eq", key="a.b", value="2"),
    "eq missing key": _filter("eq", key="missing", value="1"),
    "noteq present keys only": _filter("noteq", key="color", value='"red"'),
    "comparison lt": _filter("comparison", operator="lt", key="x", value="1"),
    "comparison ge": _filter("comparison", operator="ge", key="neg", value="-5"),
    "comparison strings": _filter("comparison", operator="gt", key="s", value='"1"'),
    "contains in list": _filter("contains", key="tags", value='"b"'),
    "in": _filter("in", key="color", value='["red", "blue"]'),
    "in empty": _filter("in", key="color", value="[]"),
    "notin empty": _filter("notin", key="color", value="[]"),
    "fulltext": _filter("fulltext", text="peace"),
    "fulltext unicode": _filter("fulltext", text="café"),
    "fulltext punctuation": _filter("fulltext", text="foo"),
    "like": _filter("like", key="note", pattern='"%world"'),
    "keys_filter": _filter("keys_filter", keys='["c", "a", "zz"]'),
    "structure family": _filter("structure_family", value="array"),
    "specs include": _filter("specs", include='["run"]', exclude="[]"),
    "specs exclude": _filter("specs", include='["xdi"]', exclude='["run"]'),
    "keypresent": _filter("keypresent", key="nested.deep", exists="true"),
    "keyabsent": _filter("keypresent", key="u", exists="false"),
    "lookup": _filter("lookup", key="b"),
    "two queries": [*_filter("eq", key="color", value='"red"'), *_filter("eq", key="n", value="5")],
    "sort string key": [("sort", "s")],
    "sort descending default": [("sort", "-")],
    "sort by id": [("sort", "-id")],
    "sort then page": [("sort", "big"), ("page[offset]", "1"), ("page[limit]", "2")],
    "page": [("page[offset]", "2"), ("page[limit]", "3")],
    "page past the end": [("page[offset]", "20")],
    "page limit 0": [("page[limit]", "0")],
}


def _answers(base: str, params: list[tuple[str, str]]) -> tuple[int, Any]:
    response = httpx.get(
        f"{base}/api/v1/search/",
        params=[*params, ("fields", ""), ("api_key", API_KEY)],
        timeout=60,
    )
    if response.status_code != 200:
        return response.status_code, None
    body = response.json()
    return 200, ([item["id"] for item in body["data"]], body["meta"]["count"])


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(request, tmp_path_factory) -> Iterator[tuple[str, str]]:
    """(upstream's catalog URI, ours) on one back end."""
    if request.param == "sqlite":
        here = tmp_path_factory.mktemp("databases")
        yield f"sqlite:///{here / 'upstream.db'}", f"sqlite:///{here / 'ours.db'}"
        return
    with temporary_database("tiled_queries_upstream") as upstream:
        with temporary_database("tiled_queries_ours") as ours:
            yield upstream, ours


@pytest.mark.slow
def test_search_answers_as_upstream_does(upstream_tiled, database, tmp_path):
    """Each server builds its catalog with its own client from the same nodes; every agreed
    query must give the same keys, order and count."""
    nodes = json.dumps([NODES, ARRAY])
    answers = []
    servers = [
        (str(upstream_tiled.parent / "tiled"), upstream_tiled, database[0]),
        (str(Path(sys.executable).parent / "tiled"), Path(sys.executable), database[1]),
    ]
    for index, (tiled, python, uri) in enumerate(servers):
        cwd = tmp_path / str(index)
        cwd.mkdir()
        command = [tiled, "serve", "catalog", uri, "--init", "-w", cwd / "data"]
        command += ["--api-key", API_KEY]
        with server_process(command, cwd, env=without_pythonpath()) as url:
            written = run_isolated(python, WRITE, url, API_KEY, nodes)
            assert written.returncode == 0, written.stderr
            answers.append({name: _answers(url, params) for name, params in AGREED.items()})
    upstream, ours = answers
    differences = {
        name: (upstream[name], ours[name]) for name in AGREED if upstream[name] != ours[name]
    }
    assert not differences


# --- a regular expression that backtracks without end holds no worker -----------------------


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_a_regex_that_backtracks_without_end_is_a_400(backend, tmp_path):
    """(a|a)+$ on 40 a's and a '!' takes about 2**40 steps; each search of a value gives up
    after tiled.queries.REGEX_SEARCH_SECONDS."""
    import time

    note = {"note": "a" * 40 + "!"}
    if backend == "memory":
        app = build_app(MapAdapter({"x": MapAdapter({}, metadata=note)}))
    else:
        app = build_app(in_memory(writable_storage=tmp_path))
    with Context.from_app(app) as context:
        if backend == "sqlite":
            from_context(context).create_container("x", metadata=note)
        started = time.monotonic()
        response = _search(context, _regex("(a|a)+$"))
        assert response.status_code == 400, response.text
        assert "too long" in response.json()["detail"]
        assert time.monotonic() - started < 30
        assert _keys(context, _regex("a+!$")) == ["x"]  # the same value, a sane pattern


def test_one_deadline_for_all_the_values_of_a_search(tmp_path):
    """Each value takes this pattern a tenth of a second, well within any per-value limit;
    40 of them together take longer than the search may (tiled.queries.REGEX_QUERY_SECONDS)."""
    children = {
        f"n{i}": MapAdapter({}, metadata={"note": f"sample_{i:04d}_measurement_run."})
        for i in range(40)
    }
    with Context.from_app(build_app(MapAdapter(children))) as context:
        response = _search(context, _regex(r"^(\w|\w\w)*$"))
        assert response.status_code == 400, response.text
        assert "too long" in response.json()["detail"]


class SlowToDescribe(MapAdapter):
    """A node whose metadata takes a while to read (a file opened, a database asked)."""

    def metadata(self):
        import time

        time.sleep(0.1)
        return super().metadata()


def test_only_the_matching_spends_a_search_s_time(monkeypatch):
    """Reading 12 values takes 1.2 s here, more than the search's allowance (set to 0.5 s),
    but matching them takes microseconds: the search is answered."""
    import tiled.queries

    monkeypatch.setattr(tiled.queries, "REGEX_QUERY_SECONDS", 0.5)
    children = {f"n{i}": SlowToDescribe({}, metadata={"note": f"run {i}"}) for i in range(12)}
    found = MapAdapter(children).search(Regex("note", r"^run 1\d?$"))
    assert list(found.keys()) == ["n1", "n10", "n11"]


@pytest.mark.parametrize("pattern", ["a{4294967294}", "(?:a{65535}){65535}", "(?:a{200}){200}"])
def test_repeats_that_unroll_past_the_limit_are_a_400(served, pattern):
    """The regex package builds counted repeats out when it compiles a pattern: these took
    gigabytes (the first got the server killed)."""
    _, context = served
    response = _search(context, _regex(pattern))
    assert response.status_code == 400, response.text
    assert "repeats too much" in response.json()["detail"]
