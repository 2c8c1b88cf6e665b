"""``tiled api_key create|list|revoke``: manage your API keys on a multi-user server.

These commands talk HTTP to a running server (``--uri``, default ``$TILED_URI`` or
http://localhost:8000) with an API key (``--api-key`` or ``$TILED_API_KEY``), or log in with
``--username`` (the password is prompted), or else use the session ``tiled login`` remembered
for that server.
"""

from __future__ import annotations

import os
import re
from contextlib import closing

import typer

api_key_app = typer.Typer(no_args_is_help=True, help="Create, list and revoke API keys.")

URI = typer.Option(None, "--uri", help="Server URL (default: $TILED_URI or localhost:8000).")
API_KEY = typer.Option(None, "--api-key", help="Credentials (default: $TILED_API_KEY).")
USERNAME = typer.Option(None, "--username", "-u", help="Log in as this user (no API key).")
PROVIDER = typer.Option(None, "--provider", help="Provider to log in with (default: first).")
NO_VERIFY = typer.Option(False, "--no-verify", help="Do not verify TLS certificates.")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "y": 365 * 86400}


def _fail(message: str) -> None:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code=1)


def parse_duration(text: str) -> int:
    """Seconds in ``3600``, ``30s``, ``5m``, ``1h``, ``3d`` or ``1y``."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhdy]?)\s*", text)
    if not match or int(match.group(1)) == 0:
        raise typer.BadParameter(f"{text!r} is not a positive duration like 3600, 5m, 1h or 3d")
    return int(match.group(1)) * UNITS[match.group(2) or "s"]


def _check(response):
    if response.is_success:
        return response
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    _fail(f"the server answered {response.status_code}: {detail}")


def _login(http, username: str, provider: str | None) -> str:
    providers = _check(http.get("/")).json()["authentication"]["providers"]
    names = [p["provider"] for p in providers if p.get("mode") == "internal"]
    if not names:
        _fail("this server has no username/password providers; use --api-key")
    if provider is not None and provider not in names:
        _fail(f"no provider {provider!r} on this server; it has {names}")
    # On standard error: standard output carries only the key (KEY=$(tiled api_key create ...)).
    password = typer.prompt(f"Password for {username}", hide_input=True, err=True)
    form = {"username": username, "password": password}
    tokens = _check(http.post(f"/auth/provider/{provider or names[0]}/token", data=form)).json()
    return tokens["access_token"]


def _client(uri: str | None, api_key: str | None, username: str | None, provider, no_verify):
    try:
        import httpx
    except ImportError:
        _fail("this command needs httpx: pip install 'tiled[client]'")
    base = (uri or os.environ.get("TILED_URI") or "http://localhost:8000").rstrip("/")
    api = base if base.endswith("/api/v1") else f"{base}/api/v1"
    http = httpx.Client(base_url=api, verify=not no_verify, timeout=30)
    key = api_key or os.environ.get("TILED_API_KEY")
    if key:
        http.headers["Authorization"] = f"Apikey {key}"
    elif username:
        http.headers["Authorization"] = f"Bearer {_login(http, username, provider)}"
    else:
        token = _remembered_token(base, no_verify)
        if token is None:
            _fail(
                "no credentials: pass --api-key, set TILED_API_KEY, log in with --username, "
                "or log in first with `tiled login`"
            )
        http.headers["Authorization"] = f"Bearer {token}"
    return http


def _remembered_token(base: str, no_verify: bool) -> str | None:
    """A fresh access token of the session ``tiled login`` remembered for this server; None
    if there is none (or it has ended)."""
    import httpx

    from ..client.context import Context

    try:
        context, _ = Context.from_any_uri(base, verify=not no_verify)
    except httpx.TransportError as error:
        _fail(f"cannot reach {base}: {error}")
    except (ValueError, httpx.InvalidURL) as error:
        _fail(f"not a usable server URL {base!r}: {error}")
    try:
        if not context.use_cached_tokens():  # asks the server: the token is fresh after it
            return None
        return context.http_client.auth.sync_get_token("access_token")
    finally:
        context.close()


@api_key_app.command("create")
def create(
    expires_in: str | None = typer.Option(
        None, "--expires-in", help="Lifetime: seconds, or with a unit as in 30s, 5m, 1h, 3d, 1y."
    ),
    scopes: list[str] | None = typer.Option(
        None, "--scopes", help="A scope to grant (repeatable; default: all of yours, 'inherit')."
    ),
    access_tags: list[str] | None = typer.Option(
        None, "--access-tags", help="Restrict to this access tag (repeatable)."
    ),
    note: str | None = typer.Option(None, "--note", help="A reminder of what the key is for."),
    uri: str | None = URI,
    api_key: str | None = API_KEY,
    username: str | None = USERNAME,
    provider: str | None = PROVIDER,
    no_verify: bool = NO_VERIFY,
) -> None:
    """Create an API key and print its secret (shown only this once)."""
    params = {
        "expires_in": parse_duration(expires_in) if expires_in else None,
        "scopes": list(scopes) if scopes else None,
        "access_tags": list(access_tags) if access_tags else None,
        "note": note,
    }
    with closing(_client(uri, api_key, username, provider, no_verify)) as http:
        key = _check(http.post("/auth/apikey", json=params)).json()
    typer.echo(key["secret"])


@api_key_app.command("list")
def list_keys(
    uri: str | None = URI,
    api_key: str | None = API_KEY,
    username: str | None = USERNAME,
    provider: str | None = PROVIDER,
    no_verify: bool = NO_VERIFY,
) -> None:
    """List your API keys (their first eight characters, never the secrets)."""
    with closing(_client(uri, api_key, username, provider, no_verify)) as http:
        principal = _check(http.get("/auth/whoami")).json()
    keys = (principal or {}).get("api_keys", [])
    if not keys:
        typer.echo("No API keys found", err=True)
        return
    row = "{:<9} {:<26} {:<26} {:<24} {}"
    typer.echo(row.format("First 8", "Expires at (UTC)", "Latest activity", "Note", "Scopes"))
    for key in keys:
        when = [(key[name] or "-")[:19] for name in ("expiration_time", "latest_activity")]
        note = (key["note"] or "-")[:24]
        typer.echo(row.format(key["first_eight"], *when, note, " ".join(key["scopes"])))


@api_key_app.command("revoke")
def revoke(
    first_eight: str = typer.Argument(..., help="The first eight characters of the key."),
    uri: str | None = URI,
    api_key: str | None = API_KEY,
    username: str | None = USERNAME,
    provider: str | None = PROVIDER,
    no_verify: bool = NO_VERIFY,
) -> None:
    """Revoke one of your API keys: it stops working at once."""
    with closing(_client(uri, api_key, username, provider, no_verify)) as http:
        _check(http.delete("/auth/apikey", params={"first_eight": first_eight}))
    typer.echo(f"Revoked API key {first_eight}", err=True)
