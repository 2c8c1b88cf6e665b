"""Query dataclasses: wire encoding, validation, the Key helper and the registry."""

import dataclasses
import json
import subprocess
import sys

import pytest

from tiled.errors import InvalidQuery
from tiled.queries import (
    AccessBlobFilter,
    AccessTagsFilter,
    Comparison,
    Contains,
    Eq,
    FullText,
    In,
    Key,
    KeyLookup,
    KeyPresent,
    KeysFilter,
    Like,
    NotEq,
    NotIn,
    Operator,
    Regex,
    SpecQuery,
    SpecsQuery,
    StructureFamilyQuery,
)
from tiled.query_registration import QueryRegistry, default_query_registry
from tiled.structures.core import Spec, StructureFamily

# (query, HTTP name, expected wire encoding)
CASES = [
    (FullText("dog cat"), "fulltext", {"text": "dog cat"}),
    (KeyLookup("a"), "lookup", {"key": "a"}),
    (KeysFilter(["a", "b"]), "keys_filter", {"keys": '["a", "b"]'}),
    (
        Regex("sample.name", "^Fe.*", case_sensitive=False),
        "regex",
        {"key": "sample.name", "pattern": "^Fe.*", "case_sensitive": "false"},
    ),
    (Eq("color", "red"), "eq", {"key": "color", "value": '"red"'}),
    (Eq("dims", [1, 2]), "eq", {"key": "dims", "value": "[1, 2]"}),
    (NotEq("n", 3), "noteq", {"key": "n", "value": "3"}),
    (
        Comparison("le", "temperature", 300.5),
        "comparison",
        {"operator": "le", "key": "temperature", "value": "300.5"},
    ),
    (Contains("tags", "x"), "contains", {"key": "tags", "value": '"x"'}),
    (In("color", ["red", "blue"]), "in", {"key": "color", "value": '["red", "blue"]'}),
    (NotIn("n", [1, None]), "notin", {"key": "n", "value": "[1, null]"}),
    (KeyPresent("a.b", exists=False), "keypresent", {"key": "a.b", "exists": "false"}),
    (Like("name", "Fe%"), "like", {"key": "name", "pattern": '"Fe%"'}),
    (
        SpecsQuery(["xarray_dataset"], exclude=["old"]),
        "specs",
        {"include": '["xarray_dataset"]', "exclude": '["old"]'},
    ),
    (
        AccessBlobFilter("alice", ["beamline_a"]),
        "access_blob_filter",
        {"user_id": '"alice"', "tags": '["beamline_a"]'},
    ),
    (AccessBlobFilter(None, []), "access_blob_filter", {"user_id": "null", "tags": "[]"}),
    (
        AccessTagsFilter(["data_A", "public"]),
        "access_tags_filter",
        {"tags": '["data_A", "public"]'},
    ),
    (StructureFamilyQuery("table"), "structure_family", {"value": "table"}),
]


@pytest.mark.parametrize("query, name, encoded", CASES, ids=[c[1] for c in CASES])
def test_encode_decode_round_trip(query, name, encoded):
    assert query.encode() == encoded
    assert default_query_registry.name_of(type(query)) == name
    assert type(query).decode(**encoded) == query


def test_every_query_type_is_covered_by_the_round_trip_cases():
    covered = {type(query) for query, _, _ in CASES}
    assert covered == set(default_query_registry.name_to_query_type.values())


def test_registered_names_match_upstream_order():
    assert default_query_registry.names == [
        "fulltext",
        "lookup",
        "keys_filter",
        "regex",
        "eq",
        "noteq",
        "comparison",
        "contains",
        "in",
        "notin",
        "keypresent",
        "like",
        "specs",
        "access_blob_filter",  # upstream before 0.2.19
        "access_tags_filter",  # upstream 0.2.19 and later
        "structure_family",
    ]


def test_fields_are_normalized_to_hashable_values():
    assert In("k", ["a", "b"]).value == ("a", "b")
    assert KeysFilter(["a"]).keys == ("a",)
    assert SpecsQuery([Spec("xarray_dataset")]).include == ("xarray_dataset",)
    assert Comparison("gt", "k", 1).operator is Operator.gt
    assert StructureFamilyQuery("array").value is StructureFamily.array
    assert hash(In("k", [1])) == hash(In("k", (1,)))
    assert len({Eq("a", 1), Eq("a", 1), Eq("a", 2)}) == 2


def test_spec_query_is_specs_query_with_one_spec():
    assert SpecQuery("xarray_dataset") == SpecsQuery(["xarray_dataset"], exclude=[])


@pytest.mark.parametrize(
    "make",
    [
        lambda: SpecsQuery("xarray_dataset"),
        lambda: SpecsQuery(["a"], exclude="b"),
        lambda: KeysFilter("abc"),
        lambda: In("k", "abc"),
        lambda: AccessBlobFilter("u", "tag"),
    ],
)
def test_bare_string_for_a_list_field_raises_type_error(make):
    with pytest.raises(TypeError, match="must be a list"):
        make()


@pytest.mark.parametrize(
    "cls, fields, bad",
    [
        (Eq, {"key": "color", "value": "red"}, "'red'"),  # JSON needs quotes
        (In, {"key": "color", "value": '"red"'}, "'red'"),  # a string, not a list
        (KeysFilter, {"keys": "[1, 2]"}, "1"),
        (Comparison, {"operator": "eq", "key": "k", "value": "1"}, "'eq'"),
        (Regex, {"key": "k", "pattern": "a(b", "case_sensitive": "true"}, "'a(b'"),
        (Regex, {"key": "k", "pattern": "a", "case_sensitive": "yes"}, "'yes'"),
        (KeyPresent, {"key": "k", "exists": '"maybe"'}, "'maybe'"),
        (SpecsQuery, {"include": '"xarray_dataset"', "exclude": "[]"}, "xarray_dataset"),
        (StructureFamilyQuery, {"value": "tensor"}, "'tensor'"),
        (Like, {"key": "k", "pattern": "Fe%"}, "'Fe%'"),
        (FullText, {}, "text"),
    ],
)
def test_bad_encodings_raise_invalid_query_naming_the_value(cls, fields, bad):
    with pytest.raises(InvalidQuery) as info:
        cls.decode(**fields)
    assert bad in str(info.value)


def test_invalid_query_is_a_value_error_for_python_callers():
    with pytest.raises(ValueError, match="tensor"):
        StructureFamilyQuery("tensor")


def test_key_helper_builds_queries():
    color = Key("sample.color")
    assert (color == "red") == Eq("sample.color", "red")
    assert (color != "red") == NotEq("sample.color", "red")
    assert (Key("t") < 1) == Comparison("lt", "t", 1)
    assert (Key("t") > 1) == Comparison("gt", "t", 1)
    assert (Key("t") <= 1) == Comparison("le", "t", 1)
    assert (Key("t") >= 1) == Comparison("ge", "t", 1)
    assert (1 < Key("t")) == Comparison("gt", "t", 1)  # reflected: t > 1
    with pytest.raises(TypeError):
        hash(color)


@pytest.mark.parametrize("query", [q for q, _, _ in CASES], ids=[c[1] for c in CASES])
def test_queries_refuse_truthiness(query):
    with pytest.raises(TypeError, match=r"\.search\("):
        bool(query)


def test_key_comparison_in_if_statement_raises():
    with pytest.raises(TypeError, match="chain"):
        if Key("color") == "red":
            pass


def test_registry_encodes_and_decodes_http_parameters():
    registry = default_query_registry
    params = [
        *registry.encode_params(Eq("color", "red")).items(),
        *registry.encode_params(Eq("animal", "dog")).items(),
        *registry.encode_params(Comparison("gt", "n", 2)).items(),
        ("filter[unknown][condition][key]", "ignored"),
        ("page[limit]", "10"),
    ]
    assert params[0] == ("filter[eq][condition][key]", "color")
    assert params[1] == ("filter[eq][condition][value]", '"red"')
    queries = registry.decode_params(params)
    assert queries == [Eq("color", "red"), Eq("animal", "dog"), Comparison("gt", "n", 2)]


def test_registry_rejects_unequal_field_counts_and_unknown_fields():
    registry = default_query_registry
    with pytest.raises(InvalidQuery, match="unequal"):
        registry.decode_params(
            [("filter[eq][condition][key]", "a"), ("filter[eq][condition][key]", "b")]
            + [("filter[eq][condition][value]", "1")]
        )
    with pytest.raises(InvalidQuery, match="bogus"):
        registry.decode_params([("filter[lookup][condition][bogus]", "x")])


def test_registry_refuses_reserved_separator_and_duplicate_names():
    registry = QueryRegistry()

    @dataclasses.dataclass(frozen=True)
    class Good:
        key: str

    @dataclasses.dataclass(frozen=True)
    class BadField:
        some___field: str

    registry.register(name="good")(Good)
    assert registry.query_type("good") is Good
    assert registry.name_of(Good) == "good"
    with pytest.raises(ValueError, match="___"):
        registry.register(name="bad___name")(Good)
    with pytest.raises(ValueError, match="___"):
        registry.register(name="badfield")(BadField)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(name="good")(_other())
    with pytest.raises(TypeError, match="dataclass"):
        registry.register(name="plain")(type("Plain", (), {}))


def _other() -> type:
    @dataclasses.dataclass(frozen=True)
    class Other:
        key: str

    return Other


def test_custom_query_round_trips_through_registry():
    registry = QueryRegistry()

    @registry.register(name="near")
    @dataclasses.dataclass(frozen=True)
    class Near:
        x: float

        def encode(self):
            return {"x": json.dumps(self.x)}

        @classmethod
        def decode(cls, *, x):
            return cls(json.loads(x))

    params = registry.encode_params(Near(1.5))
    assert params == {"filter[near][condition][x]": "1.5"}
    assert registry.decode_params(params.items()) == [Near(1.5)]


def test_importing_queries_does_not_import_numpy_or_pandas():
    code = (
        "import sys, tiled.queries, tiled.query_registration; "
        "print(sorted(m for m in ('numpy', 'pandas', 'zarr') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
