import pytest


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
