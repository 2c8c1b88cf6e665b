"""Hostile configurations: each is accepted with upstream's meaning or refused in one line naming
the file and the key, never a traceback, a hang, or a server started half-configured."""

from __future__ import annotations

import logging
import re
import subprocess
import time
from pathlib import Path

import pytest

from tiled.config import ConfigError, construct_build_app_kwargs, parse_configs

from .test_cli import TILED

DEMO = "tiled.examples.generated_minimal:tree"
TREES = f"trees: [{{path: /, tree: '{DEMO}'}}]\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        construct_build_app_kwargs(parse_configs(path))
    return info.value.problems


def billion_laughs(levels: int) -> str:
    text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for level in range(levels):
        name, previous = chr(98 + level), chr(97 + level)
        text += f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 10) + "]\n"
    return text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # 10**10 values once expanded: refused at once, not after gigabytes.
        (TREES + billion_laughs(9), "expands to more than 1,000,000 values"),
        ("trees: &a [*a]\n", "alias refers to a value that contains it"),
        ("catalog: &c {uri: x.db, metadata: {self: *c}}\n", "alias refers to a value"),
        ("trees: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
        ("trees: " + "[" * 150 + "]" * 150 + "\n", "nested more than 100 levels deep"),
    ],
)
def test_yaml_that_would_explode_is_one_line(tmp_path, text, message):
    path = write(tmp_path / "config.yml", text)
    start = time.monotonic()
    problems = problems_of(path)
    # Refused in well under a second (the deepest nesting takes the longest, 0.6 s); reading
    # the values out would take hours. A loaded machine's slowness is not the bound.
    assert time.monotonic() - start < 30
    assert len(problems) == 1 and problems[0].startswith(f"{path}: "), problems
    assert message in problems[0]


def test_shared_aliases_within_limits_are_read(tmp_path):
    path = write(
        tmp_path / "config.yml",
        f"trees:\n  - &t {{path: /a, tree: '{DEMO}'}}\n  - {{<<: *t, path: /b}}\n",
    )
    assert [tree.path for tree in parse_configs(path).trees] == ["/a", "/b"]


def test_bare_dollar_variables_expand_as_upstream(tmp_path, monkeypatch):
    # Upstream expands with os.path.expandvars: $NAME too; an unset $NAME stays as written.
    monkeypatch.setenv("HOSTILE_ORIGIN_HOST", "a.example")
    monkeypatch.delenv("HOSTILE_UNSET", raising=False)
    path = write(
        tmp_path / "config.yml",
        TREES + "allow_origins: ['https://$HOSTILE_ORIGIN_HOST', 'pa$HOSTILE_UNSET', '$$${X}']\n",
    )
    assert parse_configs(path).allow_origins == ["https://a.example", "pa$HOSTILE_UNSET", "$${X}"]


def test_duplicate_yaml_keys_warn_and_keep_the_last(tmp_path, caplog):
    # Upstream keeps the last value silently; here the same, with a warning naming the line.
    path = write(tmp_path / "config.yml", TREES + "exact_count_limit: 1\nexact_count_limit: 2\n")
    with caplog.at_level(logging.WARNING, logger="tiled.config.files"):
        config = parse_configs(path)
    assert config.exact_count_limit == 2
    assert f"{path}: line 3: the key 'exact_count_limit' is given twice" in caplog.text


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        # Past a 64-bit integer: SQL LIMITs would overflow (zarr listings answered 500).
        ("zarr_listing_max: 100000000000000000000000000000", "zarr_listing_max", "less than"),
        ("response_bytesize_limit: 1" + "0" * 40, "response_bytesize_limit", "less than"),
        ("catalog_pool_size: 1" + "0" * 40, "catalog_pool_size", "less than"),
        # A presigned URL valid forever cannot be made (and S3 allows seven days).
        ("zarr_direct_reads: .inf", "zarr_direct_reads", "less than or equal to 604800"),
        ("zarr_direct_reads: .nan", "zarr_direct_reads", ""),
        ("authentication: {access_token_max_age: -10}", "access_token_max_age", "positive"),
        ("authentication: {refresh_token_max_age: 0}", "refresh_token_max_age", "positive"),
        ("authentication: {session_max_age: 900000000000}", "session_max_age", "100 years"),
        ("authentication: {secret_keys: ['']}", "authentication.secret_keys", "empty"),
        ("uvicorn: {log_level: shouty}", "uvicorn.log_level", "unknown log level 'shouty'"),
    ],
)
def test_values_that_would_break_a_running_server(tmp_path, text, key, fragment):
    path = write(tmp_path / "config.yml", TREES + text + "\n")
    problems = problems_of(path)
    assert len(problems) == 1 and problems[0].startswith(f"{path}: "), problems
    assert key in problems[0] and fragment in problems[0], problems[0]


@pytest.mark.parametrize("ttl", ["-5", ".nan"])
def test_catalog_lookup_cache_ttl_is_a_duration(tmp_path, ttl):
    path = write(
        tmp_path / "config.yml", f"catalog: {{uri: ':memory:', lookup_cache_ttl: {ttl}}}\n"
    )
    assert "catalog.lookup_cache_ttl" in problems_of(path)[0]


def test_adapter_import_problems_name_the_whole_key(tmp_path):
    path = write(
        tmp_path / "config.yml",
        "catalog: {uri: 'sqlite:///:memory:', adapters_by_mimetype: {text/x: 'no.such:Thing'}}\n",
    )
    (problem,) = problems_of(path)
    assert problem == (
        f"{path}: catalog.adapters_by_mimetype.text/x: cannot import 'no.such:Thing': "
        "no module 'no.such'"
    )
    trees = (
        "trees: [{path: /raw, tree: catalog, args: {uri: 'sqlite:///:memory:', "
        "adapters_by_mimetype: {text/x: 'no.such:Thing'}}}]\n"
    )
    (problem,) = problems_of(write(path, trees))
    assert problem.startswith(f"{path}: trees[0] (/raw): args.adapters_by_mimetype.text/x: ")


# --- the command line: one line, exit status 1, nothing served ---------------------------------


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*TILED, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


def one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "running at" not in result.stderr
    return lines[0]


def test_cli_recursive_alias_is_one_line(tmp_path):
    write(tmp_path / "config.yml", "trees: &a [*a]\n")
    line = one_line(run("serve", "config", "config.yml", "--port", "0", cwd=tmp_path))
    assert line == "Error: config.yml: a YAML alias refers to a value that contains it"


def test_cli_unopenable_catalog_names_the_file_and_database(tmp_path):
    # A catalog whose directory cannot be made (its parent is a file).
    write(
        tmp_path / "config.yml",
        "catalog: {uri: 'sqlite:///config.yml/x.db', init_if_not_exists: true}\n",
    )
    line = one_line(run("serve", "config", "config.yml", "--port", "0", cwd=tmp_path))
    assert line.startswith("Error: config.yml: cannot open the catalog at sqlite"), line
    assert "config.yml/x.db" in line


def test_cli_upstream_options_are_accepted(tmp_path):
    # Upstream 0.2.20's options of `tiled serve`: implemented, or refused naming the option.
    write(tmp_path / "config.yml", TREES)
    missing = one_line(
        run("serve", "config", "config.yml", "--log-config", "nope.json", "--log-timestamps",
            cwd=tmp_path)
    )  # fmt: skip
    assert missing == "Error: --log-config: no such logging configuration file 'nope.json'"
    cache = one_line(
        run("serve", "catalog", "c.db", "--init", "--cache", "memory", "--cache-data-ttl", "5",
            "--cache-seq-ttl", "5", "--workers", "2", "--no-log-timestamps", cwd=tmp_path)
    )  # fmt: skip
    assert cache.startswith("Error: --cache memory keeps live updates in one server process")
    bad_cache = one_line(
        run("serve", "catalog", "--temp", "--cache", "http://x", cwd=tmp_path)
    )  # fmt: skip
    assert bad_cache.startswith("Error: streaming_cache.uri: "), bad_cache
    walker = one_line(run("serve", "directory", ".", "--walker", "a.b:c", cwd=tmp_path))
    assert walker.startswith("Error: --walker: not supported by this server")
    pyobject = one_line(
        run("serve", "pyobject", DEMO, "--scalable", "--log-config", "x.ini", cwd=tmp_path)
    )
    assert pyobject == "Error: --log-config: no such logging configuration file 'x.ini'"


def test_cli_log_timestamps_prefix_uvicorn_lines(tmp_path):
    write(tmp_path / "config.yml", TREES)
    process = subprocess.Popen(
        [*TILED, "serve", "config", "config.yml", "--port", "0", "--log-timestamps"],
        cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        first = process.stderr.readline()
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert re.match(r"\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] INFO", first), first
