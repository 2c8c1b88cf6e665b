"""The deployment files (Containerfile, compose.yml, deploy/) fit together and work.

No container runs here (no registry is reachable to pull base images): what can be checked
without one is checked for real. HAProxy reads the balancer's configuration; the server's
configuration is checked by ``tiled admin check-config`` and then served, with ``--scalable``,
against PostgreSQL databases made for the test (the compose file's host names swapped for
the test server's).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import httpx
import numpy
import pytest
import yaml

from .load_balancer import haproxy_or_skip
from .postgres import temporary_database
from .processes import TILED, server_process

ROOT = Path(__file__).resolve().parents[2]
ENVIRONMENT = {
    "POSTGRES_PASSWORD": "pw",
    "TILED_SECRET_KEY": "0" * 64,
    "TILED_SINGLE_USER_API_KEY": "secret",
}


def test_the_compose_file_names_files_that_exist():
    compose = yaml.safe_load((ROOT / "compose.yml").read_text())
    services = compose["services"]
    assert {"tiled1", "tiled2", "haproxy", "postgres"} <= set(services)
    for name in ("tiled1", "tiled2"):
        build = services[name]["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).is_file()
        assert services[name]["volumes"] == ["tiled_storage:/storage"]
    mounted = [v.split(":")[0] for s in services.values() for v in s.get("volumes", [])]
    for source in (m for m in mounted if m.startswith("./")):
        assert (ROOT / source).exists(), source
    # Every COPY of the Containerfile copies something that exists.
    containerfile = (ROOT / "Containerfile").read_text()
    for source in re.findall(r"^COPY (?!--from)(\S+) ", containerfile, re.MULTILINE):
        assert (ROOT / source).exists(), source


def test_haproxy_accepts_the_balancer_configuration():
    haproxy = haproxy_or_skip()
    checked = subprocess.run(
        [haproxy, "-c", "-f", str(ROOT / "deploy" / "haproxy.cfg")], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.slow
def test_the_server_configuration_is_checked_and_served(tmp_path):
    environment = {**os.environ, **ENVIRONMENT}
    deployed = ROOT / "deploy" / "config.yml"
    checked = subprocess.run(
        [*TILED, "admin", "check-config", str(deployed)], capture_output=True, text=True,
        env=environment,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with (
        temporary_database("tiled_deploy_catalog") as catalog,
        temporary_database("tiled_deploy_authn") as authn,
    ):
        text = deployed.read_text()
        text = text.replace(
            "postgresql://tiled:${POSTGRES_PASSWORD}@postgres:5432/tiled_catalog", catalog
        )
        text = text.replace(
            "postgresql://tiled:${POSTGRES_PASSWORD}@postgres:5432/tiled_authn", authn
        )
        text = text.replace("writable_storage: /storage", f"writable_storage: {tmp_path / 'data'}")
        assert "postgres:5432" not in text
        config = tmp_path / "config.yml"
        config.write_text(text)
        command = [*TILED, "serve", "config", str(config), "--scalable"]
        with server_process(command, tmp_path, env=environment) as url:
            headers = {"Authorization": "Apikey secret"}
            data = numpy.arange(4.0)
            node = {
                "id": "x", "structure_family": "array", "metadata": {},
                "data_sources": [{"structure_family": "array", "assets": [], "structure": {
                    "data_type": {"endianness": "little", "kind": "f", "itemsize": 8,
                                  "dt_units": None},
                    "chunks": [[4]], "shape": [4], "dims": None, "resizable": False}}],
            }  # fmt: skip
            created = httpx.post(f"{url}/api/v1/metadata/", json=node, headers=headers)
            assert created.status_code == 200, created.text
            written = httpx.put(
                f"{url}/api/v1/array/full/x", content=data.tobytes(), headers=headers
            )
            assert written.status_code == 200, written.text
            full = httpx.get(f"{url}/api/v1/array/full/x", headers=headers)
            assert numpy.frombuffer(full.content, "<f8").tolist() == data.tolist()
            assert httpx.get(f"{url}/zarr/v3/x/c/0", headers=headers).status_code == 200
