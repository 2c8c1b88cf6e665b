import pytest


@pytest.fixture(params=[2, 3], ids=["zarr2", "zarr3"])
def zarr_format(request) -> int:
    return request.param


def pytest_generate_tests(metafunc):
    # Conformance classes list their cases in `build_cases()`; each test runs once per case.
    if "zarr_case" in metafunc.fixturenames and hasattr(metafunc.cls, "build_cases"):
        cases = metafunc.cls.build_cases()
        metafunc.parametrize("zarr_case", list(cases.values()), ids=list(cases))
