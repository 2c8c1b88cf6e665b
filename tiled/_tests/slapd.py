"""A real OpenLDAP server (Debian's ``slapd``) on a loopback port, for the LDAP login tests.

The directory is made in a temporary folder: an organization ``dc=example,dc=org`` whose
administrator is ``cn=admin,dc=example,dc=org`` (password :data:`ADMIN_PASSWORD`). Tests add
their people and groups with ldap3, as the administrator.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .processes import free_port

SUFFIX = "dc=example,dc=org"
ADMIN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "admin-secret"
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")


def slapd_command() -> str | None:
    """The slapd binary, if installed (Debian: apt-get install slapd)."""
    return shutil.which("slapd") or next(
        (path for path in ("/usr/sbin/slapd",) if Path(path).exists()), None
    )


@contextmanager
def running_slapd(directory: Path) -> Iterator[str]:
    """A slapd serving a fresh, empty directory; yields its ``host:port``."""
    slapd = slapd_command()
    assert slapd is not None, "slapd is not installed"
    database = directory / "db"
    database.mkdir(parents=True)
    includes = "\n".join(f"include /etc/ldap/schema/{name}.schema" for name in SCHEMAS)
    config = directory / "slapd.conf"
    config.write_text(
        f"""{includes}
pidfile {directory / "slapd.pid"}
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 10485760
suffix "{SUFFIX}"
rootdn "{ADMIN}"
rootpw {ADMIN_PASSWORD}
directory {database}
"""
    )
    port = free_port()
    address = f"127.0.0.1:{port}"
    # -d 0: in the foreground (stopped with the test), logging nothing.
    process = subprocess.Popen(
        [slapd, "-f", str(config), "-h", f"ldap://{address}/", "-d", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for(address, process)
        _add_organization(address)
        yield address
    finally:
        process.terminate()
        process.wait(timeout=20)


def _wait_for(address: str, process: subprocess.Popen) -> None:
    import socket

    host, port = address.split(":")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"slapd exited: {process.stderr.read().decode(errors='replace')}")
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("slapd did not start in 30 s")


def admin_connection(address: str):
    import ldap3

    host, port = address.split(":")
    server = ldap3.Server(host, port=int(port))
    return ldap3.Connection(server, ADMIN, ADMIN_PASSWORD, auto_bind=True)


def _add_organization(address: str) -> None:
    with admin_connection(address) as connection:
        connection.add(SUFFIX, ["dcObject", "organization"], {"o": "Example", "dc": "example"})
        for unit in ("people", "groups"):
            connection.add(f"ou={unit},{SUFFIX}", ["organizationalUnit"], {"ou": unit})


def add_person(address: str, uid: str, password: str, **attributes: str) -> str:
    """A person ``uid=...,ou=people`` who logs in with ``password``; returns the DN."""
    dn = f"uid={uid},ou=people,{SUFFIX}"
    with admin_connection(address) as connection:
        values = {"cn": uid, "sn": uid, "uid": uid, "userPassword": password, **attributes}
        assert connection.add(dn, ["inetOrgPerson"], values), connection.result
    return dn


def add_group(address: str, name: str, member_dns: list[str]) -> str:
    dn = f"cn={name},ou=groups,{SUFFIX}"
    with admin_connection(address) as connection:
        assert connection.add(dn, ["groupOfNames"], {"cn": name, "member": member_dns}), (
            connection.result
        )
    return dn


def add_posix_group(address: str, name: str, uids: list[str], gid: int) -> str:
    dn = f"cn={name},ou=groups,{SUFFIX}"
    with admin_connection(address) as connection:
        values = {"cn": name, "gidNumber": str(gid), "memberUid": uids}
        assert connection.add(dn, ["posixGroup"], values), connection.result
    return dn
