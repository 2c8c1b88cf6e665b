import functools

import pytest


def _share_httpx_default_tls_context() -> None:
    """Every ``httpx.Client()`` builds a TLS context and loads a whole CA bundle: 35 ms of
    CPU, for clients that then talk plain HTTP on loopback. The tests make thousands
    (``httpx.get(...)`` makes one per call), a minute and more of the suite's CPU; here the
    default context (verify=True, no client certificate; per SSL_CERT_FILE and SSL_CERT_DIR,
    which httpx reads) is made once per test process and shared, as one client shares it
    between its connections. Any other request for a context is made as httpx makes it."""
    import os

    import httpx._transports.default as transports

    create = getattr(transports, "create_ssl_context", None)
    if create is None or getattr(create, "shares_default", False):
        return  # another httpx, or done already

    @functools.cache
    def default(cert_file: str | None, cert_dir: str | None):
        return create(verify=True, cert=None, trust_env=True)

    @functools.wraps(create)
    def create_ssl_context(verify=True, cert=None, trust_env=True):
        if verify is True and cert is None and trust_env:
            return default(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
        return create(verify=verify, cert=cert, trust_env=trust_env)

    create_ssl_context.shares_default = True
    transports.create_ssl_context = create_ssl_context


_share_httpx_default_tls_context()


@pytest.fixture(params=[2, 3], ids=["zarr2", "zarr3"])
def zarr_format(request) -> int:
    return request.param


def pytest_generate_tests(metafunc):
    # Conformance classes list their cases in `build_cases()`; each test runs once per case.
    if "zarr_case" in metafunc.fixturenames and hasattr(metafunc.cls, "build_cases"):
        cases = metafunc.cls.build_cases()
        metafunc.parametrize("zarr_case", list(cases.values()), ids=list(cases))


@pytest.fixture(scope="session")
def demo_tree():
    from tiled.examples.generated import tree

    return tree


@pytest.fixture(scope="session")
def demo_server(demo_tree):
    """The demo tree, public, on a live uvicorn server shared by the whole session."""
    from tiled.server.app import build_app

    from .live_server import serve

    with serve(build_app(demo_tree, authentication={"allow_anonymous_access": True})) as server:
        yield server


UPSTREAM_SERVER_REQUIREMENT = "tiled[all]==0.2.20"
# Upstream's client of the release its users have (test_upstream_client, test_authentication),
# from the environment of that release's server (one environment fewer to build per run).
UPSTREAM_CLIENT_RELEASE = "0.2.16"
ZARR2_REQUIREMENTS = ("zarr>=2.18,<3", "fsspec", "aiohttp", "requests")
# Upstream releases whose catalogs the migration tests upgrade (test_catalog_migrations):
# release -> the requirements of an environment with its server.
UPSTREAM_RELEASE_REQUIREMENTS = {
    "0.2.0": ("tiled[all]==0.2.0", "fastapi<0.122"),  # 0.122 changed APIKeyBase.check_api_key
    "0.2.16": ("tiled[all]==0.2.16",),
}


def _given_python(variable: str):
    """An environment given by ``variable`` (reused between runs), or None."""
    import os
    from pathlib import Path

    given = os.environ.get(variable)
    return Path(given) if given else None


def _release_variable(version: str) -> str:
    return f"TILED_TEST_UPSTREAM_{version.replace('.', '_')}_PYTHON"


def isolated_environments_for(fixturenames) -> list[tuple[str, ...]]:
    """The requirement sets of the isolated environments a test's fixtures will build (those
    not given by an environment variable)."""
    wanted = []
    if "upstream_tiled" in fixturenames and not _given_python("TILED_TEST_UPSTREAM_PYTHON"):
        wanted.append((UPSTREAM_SERVER_REQUIREMENT,))
    client_variable = _release_variable(UPSTREAM_CLIENT_RELEASE)
    if "upstream_client_python" in fixturenames and not _given_python(client_variable):
        wanted.append(UPSTREAM_RELEASE_REQUIREMENTS[UPSTREAM_CLIENT_RELEASE])
    if "zarr2_python" in fixturenames:
        wanted.append(ZARR2_REQUIREMENTS)
    if "upstream_release" in fixturenames:
        wanted.extend(
            requirements
            for version, requirements in UPSTREAM_RELEASE_REQUIREMENTS.items()
            if not _given_python(_release_variable(version))
        )
    return wanted


def pytest_collection_finish(session):
    # Start the environments the collected tests need now, two at a time in the background,
    # instead of one by one when the first test of each asks.
    from .isolated_python import prepare

    seen = set()
    for item in session.items:
        for requirements in isolated_environments_for(getattr(item, "fixturenames", ())):
            if requirements not in seen:
                seen.add(requirements)
                prepare(*requirements)


@pytest.fixture(scope="session")
def upstream_tiled():
    """A virtual environment holding upstream's released server and client (``tiled[all]``).

    Shared by every test that builds a deployment with upstream or reads ours with it; its
    ``bin/tiled`` is upstream's command line. ``TILED_TEST_UPSTREAM_PYTHON`` names one to
    reuse between runs.
    """
    from .isolated_python import isolated_python

    given = _given_python("TILED_TEST_UPSTREAM_PYTHON")
    return given or isolated_python(UPSTREAM_SERVER_REQUIREMENT)


@pytest.fixture(scope="session")
def upstream_client_python():
    """A virtual environment with upstream's released Python client, of the release
    :data:`UPSTREAM_CLIENT_RELEASE` (the environment of that release's ``tiled[all]``, as
    ``upstream_release`` builds or the same environment variable names)."""
    from .isolated_python import isolated_python

    given = _given_python(_release_variable(UPSTREAM_CLIENT_RELEASE))
    return given or isolated_python(*UPSTREAM_RELEASE_REQUIREMENTS[UPSTREAM_CLIENT_RELEASE])


UPSTREAM_SDIST = "tiled-0.2.20.tar.gz"
UPSTREAM_INDEX = "https://pypi.org/simple/tiled/"


@pytest.fixture(scope="session")
def upstream_sdist(tmp_path_factory):
    """Upstream Tiled 0.2.20's source distribution (a tarball), read from
    ``TILED_TEST_UPSTREAM_SDIST`` or downloaded from PyPI with its sha256 checked against the
    index; skips when PyPI cannot be reached. Upstream's files are never kept in this
    repository: tests extract what they need from it (:func:`extract_from_sdist`)."""
    import hashlib
    import html
    import os
    import re
    from pathlib import Path
    from urllib.parse import urldefrag, urljoin

    import httpx

    given = os.environ.get("TILED_TEST_UPSTREAM_SDIST")
    if given:
        return Path(given)
    try:
        with httpx.Client(follow_redirects=True, timeout=60) as client:
            index = client.get(UPSTREAM_INDEX)
            index.raise_for_status()
            hrefs = [html.unescape(h) for h in re.findall(r'href="([^"]+)"', index.text)]
            found = [h for h in hrefs if urldefrag(h).url.endswith(f"/{UPSTREAM_SDIST}")]
            if not found:
                pytest.fail(f"{UPSTREAM_INDEX} lists no {UPSTREAM_SDIST}")
            url, fragment = urldefrag(urljoin(str(index.url), found[0]))
            response = client.get(url)
            response.raise_for_status()
    except httpx.TransportError as error:
        pytest.skip(f"cannot download upstream's {UPSTREAM_SDIST} from PyPI: {error!r}")
    algorithm, _, expected = fragment.partition("=")
    if algorithm != "sha256" or not expected:
        pytest.fail(f"{UPSTREAM_INDEX} gives no sha256 for {UPSTREAM_SDIST}: {fragment!r}")
    actual = hashlib.sha256(response.content).hexdigest()
    if actual != expected:
        pytest.fail(f"{url}: sha256 {actual}, the index says {expected}")
    tarball = tmp_path_factory.mktemp("upstream_sdist") / UPSTREAM_SDIST
    tarball.write_bytes(response.content)
    return tarball


def extract_from_sdist(tarball, prefix: str, folder):
    """Extract the members of ``tarball`` under ``prefix`` into ``folder``; ``folder/prefix``."""
    import tarfile

    with tarfile.open(tarball) as archive:
        members = [m for m in archive.getmembers() if m.name.startswith(prefix)]
        if not members:
            pytest.fail(f"{tarball} holds no {prefix}")
        archive.extractall(folder, members=members, filter="data")
    return folder / prefix


@pytest.fixture(scope="session")
def upstream_example_configs(upstream_sdist, tmp_path_factory):
    """Upstream Tiled 0.2.20's ``example_configs/`` folder, from its source distribution."""
    folder = tmp_path_factory.mktemp("upstream_example_configs")
    return extract_from_sdist(upstream_sdist, "tiled-0.2.20/example_configs/", folder)


@pytest.fixture(scope="session")
def zarr2_python():
    """A virtual environment with zarr-python 2.18 (and fsspec over HTTP), shared by the tests
    that read this server's /zarr/v2 with the older library."""
    from .isolated_python import isolated_python

    return isolated_python(*ZARR2_REQUIREMENTS)
