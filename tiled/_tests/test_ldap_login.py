"""Logins checked against an LDAP directory (``tiled.authenticators:LDAPAuthenticator``).

The directory is a real OpenLDAP server (Debian's slapd, see ``slapd.py``) on a loopback
port, with people and groups added for the tests; Tiled is a live server.
"""

from __future__ import annotations

import base64
import json

import httpx
import numpy
import pytest

from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter
from tiled.client.context import Context
from tiled.server.app import build_app

from .live_server import serve
from .processes import free_port
from .slapd import (
    ADMIN,
    ADMIN_PASSWORD,
    SUFFIX,
    add_group,
    add_person,
    add_posix_group,
    running_slapd,
    slapd_command,
)

pytest.importorskip("ldap3")
pytestmark = pytest.mark.skipif(
    slapd_command() is None, reason="slapd is not installed (Debian: apt-get install slapd)"
)
LDAP = "tiled.authenticators:LDAPAuthenticator"
PEOPLE = f"ou=people,{SUFFIX}"
TEMPLATE = f"uid={{username}},{PEOPLE}"


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    with running_slapd(tmp_path_factory.mktemp("slapd")) as address:
        alice = add_person(address, "alice", "wonder", mail="alice@example.org")
        add_person(address, "bob", "builder", mail="bob@example.org")
        add_person(address, "carol", "singer", mail="carol@example.org")
        groups = [
            add_group(address, "scientists", [alice]),
            add_posix_group(address, "operators", ["bob"], 5000),
        ]
        yield address, groups


@pytest.fixture(scope="module")
def server(directory, tmp_path_factory):
    address, groups = directory
    lookup = {
        "server_address": address,
        "use_tls": False,
        "lookup_dn": True,
        "user_search_base": PEOPLE,
        "user_attribute": "mail",
        "lookup_dn_user_dn_attribute": "uid",
        "lookup_dn_search_user": ADMIN,
        "lookup_dn_search_password": ADMIN_PASSWORD,
        # '@' in usernames, and anything else: the search filter escapes what it is given.
        "valid_username_regex": r"^.+$",
    }
    providers = {
        "ldap": {"server_address": address, "use_tls": False, "bind_dn_template": TEMPLATE},
        "groups": {"server_address": address, "use_tls": False, "bind_dn_template": TEMPLATE,
                   "allowed_groups": groups},
        "lookup": lookup,
        # Two servers, the first out of reach: the other one is used.
        "state": {"server_address": [f"127.0.0.1:{free_port()}", address], "use_tls": False,
                  "bind_dn_template": [f"uid={{username}},ou=nobody,{SUFFIX}", TEMPLATE],
                  "auth_state_attributes": ["mail"],
                  "search_filter": "(&(uid={username})(objectClass=inetOrgPerson))",
                  "user_search_base": PEOPLE},
        # Any username: the template makes something that is no DN of some of them.
        "loose": {"server_address": address, "use_tls": False, "bind_dn_template": TEMPLATE,
                  "valid_username_regex": r"^.+$"},
        "away": {"server_address": f"127.0.0.1:{free_port()}", "use_tls": False,
                 "bind_dn_template": TEMPLATE, "connect_timeout": 2},
    }  # fmt: skip
    authentication = {
        "providers": [
            {"provider": name, "authenticator": LDAP, "args": args}
            for name, args in providers.items()
        ],
        "secret_keys": ["0123456789abcdef0123456789abcdef"],
        "tiled_admins": [{"provider": "ldap", "id": "carol"}],
    }
    database = tmp_path_factory.mktemp("authn") / "authn.db"
    tree = MapAdapter({"x": ArrayAdapter.from_array(numpy.arange(5))})
    app = build_app(
        tree,
        authentication,
        server_settings={"database": {"uri": f"sqlite:///{database}", "init_if_not_exists": True}},
    )
    with serve(app) as live:
        yield live.url


def login(server: str, provider: str, username: str, password: str) -> httpx.Response:
    return httpx.post(
        f"{server}/api/v1/auth/provider/{provider}/token",
        data={"username": username, "password": password},
        timeout=60,
    )


def claims(access_token: str) -> dict:
    payload = access_token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_the_right_password_logs_in(server):
    response = login(server, "ldap", "alice", "wonder")
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["identity"] == {"id": "alice", "provider": "ldap"}
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    data = httpx.get(f"{server}/api/v1/array/full/x", headers=headers, params={"format": "json"})
    assert data.json() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "username, password",
    [
        ("alice", "wrong"),
        ("alice", ""),  # LDAP would take it as an anonymous bind
        ("alice", "   "),
        ("nobody", "wonder"),
        ("alice)(uid=*", "wonder"),  # not a username valid_username_regex allows
        ("Alice", "wonder"),
    ],
)
def test_other_credentials_do_not(server, username, password):
    response = login(server, "ldap", username, password)
    assert response.status_code == 401, response.text
    assert response.json()["detail"] == "Incorrect username or password"


def test_admins_are_configured_by_their_ldap_id(server):
    tokens = login(server, "ldap", "carol", "singer").json()
    assert "admin:apikeys" in claims(tokens["access_token"])["scp"]


def test_only_members_of_the_allowed_groups(server):
    assert login(server, "groups", "alice", "wonder").status_code == 200  # member
    assert login(server, "groups", "bob", "builder").status_code == 200  # memberUid
    assert login(server, "groups", "carol", "singer").status_code == 401  # in neither


def test_the_dn_looked_up_by_another_attribute(server):
    response = login(server, "lookup", "alice@example.org", "wonder")
    assert response.status_code == 200, response.text
    assert response.json()["identity"] == {"id": "alice", "provider": "lookup"}
    assert login(server, "lookup", "alice@example.org", "builder").status_code == 401


def test_search_filter_syntax_in_a_username_is_text(server):
    """'*' would find every entry, the first of them alice's, whose password is given: with
    the username put in the filter as is, this logged in as alice."""
    assert login(server, "lookup", "*", "wonder").status_code == 401
    assert login(server, "lookup", "alice@example.org)(mail=*", "wonder").status_code == 401


def test_the_entry_s_attributes_become_the_session_state(server):
    """Two templates, the first naming no entry; search_filter finds exactly one."""
    response = login(server, "state", "bob", "builder")
    assert response.status_code == 200, response.text
    assert claims(response.json()["access_token"])["state"] == {"mail": ["bob@example.org"]}


def test_a_directory_out_of_reach_is_503(server):
    response = login(server, "away", "alice", "wonder")
    assert response.status_code == 503, response.text
    assert "LDAP" in response.json()["detail"]


def test_python_client_logs_in(server):
    context = Context(server)
    context.authenticate(provider="ldap", username="bob", password="builder", remember_me=False)
    assert context.whoami()["identities"][0]["id"] == "bob"
    context.logout()


def test_a_configuration_without_a_way_to_find_the_dn_is_refused():
    from tiled.authenticators import LDAPAuthenticator

    with pytest.raises(ValueError, match="bind_dn_template"):
        LDAPAuthenticator("127.0.0.1")
    with pytest.raises(ValueError, match="server_address"):
        LDAPAuthenticator([], bind_dn_template=TEMPLATE)


@pytest.mark.parametrize("username", ["a,b=c,=", "x\\", "=", "alice,ou=people"])
def test_a_username_that_makes_no_dn_is_refused(server, username):
    response = login(server, "loose", username, "wonder")
    assert response.status_code == 401, response.text
