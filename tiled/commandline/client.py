"""``tiled login | logout | whoami | tree`` and ``tiled profile ...``: the client's commands.

A server is named by ``--profile NAME`` (see :mod:`tiled.profiles`), by ``--uri`` or
``$TILED_URI``, else the default profile, else http://localhost:8000. Prompts go to standard
error, results to standard output.
"""

from __future__ import annotations

import os
from typing import Any

import typer

PROFILE = typer.Option(None, "--profile", "-p", help="A client profile (tiled profile list).")
URI = typer.Option(None, "--uri", help="Server URL (default: $TILED_URI or localhost:8000).")
API_KEY = typer.Option(None, "--api-key", help="Credentials (default: $TILED_API_KEY).")

profile_app = typer.Typer(no_args_is_help=True, help="List, show and edit client profiles.")


def _fail(message: str) -> None:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code=1)


def _settings(profile: str | None, uri: str | None, api_key: str | None) -> dict[str, Any]:
    from ..profiles import ProfileError, get_default_profile_name, load_profiles

    if profile is None and uri is None and not os.environ.get("TILED_URI"):
        profile = get_default_profile_name()
    settings: dict[str, Any] = {}
    if profile is not None:
        try:
            profiles = load_profiles()
        except ProfileError as error:
            _fail(str(error))
        if profile not in profiles:
            _fail(f"no profile {profile!r}; known: {sorted(profiles)}")
        settings = dict(profiles[profile][1])
    if uri is not None or "uri" not in settings:
        settings["uri"] = uri or os.environ.get("TILED_URI") or "http://localhost:8000"
    if api_key is not None:
        settings["api_key"] = api_key
    return settings


def _context(profile: str | None, uri: str | None, api_key: str | None) -> Any:
    import httpx

    from ..client.context import Context

    settings = _settings(profile, uri, api_key)
    try:
        context, _ = Context.from_any_uri(
            settings["uri"], api_key=settings.get("api_key"), headers=settings.get("headers"),
            verify=settings.get("verify", True),
        )  # fmt: skip
    except httpx.TransportError as error:
        _fail(f"cannot reach {settings['uri']}: {error}")
    except (ValueError, httpx.InvalidURL) as error:  # urllib's and httpx's word on a bad URL
        _fail(f"not a usable server URL {settings['uri']!r}: {error}")
    return context


def login(
    profile: str | None = PROFILE,
    uri: str | None = URI,
    username: str | None = typer.Option(None, "--username", "-u", help="Prompted if omitted."),
    provider: str | None = typer.Option(None, "--provider", help="Default: the first."),
    show_secret_tokens: bool = typer.Option(False, "--show-secret-tokens", help="Print them."),
) -> None:
    """Log in with a username and password; the session is remembered for this server."""
    from ..client.context import PasswordRejected

    context = _context(profile, uri, None)
    if not context.authentication_providers:
        _fail("this server has no logins (it takes an API key, or anyone)")
    try:
        context.authenticate(remember_me=True, provider=provider, username=username)
    except (PasswordRejected, ValueError) as error:  # ValueError: no such provider
        _fail(str(error))
    who = context.whoami() or {}
    names = [i.get("id") for i in who.get("identities", [])]
    typer.echo(f"Logged in as {', '.join(map(str, names)) or who.get('uuid')}.", err=True)
    if show_secret_tokens:
        typer.echo(context.tokens)


def logout(profile: str | None = PROFILE, uri: str | None = URI) -> None:
    """End the remembered session with this server."""
    context = _context(profile, uri, None)
    context.use_cached_tokens()
    context.logout()
    typer.echo("Logged out.", err=True)


def whoami(
    profile: str | None = PROFILE, uri: str | None = URI, api_key: str | None = API_KEY
) -> None:
    """Who the current credentials (API key, or remembered login) act as."""
    context = _context(profile, uri, api_key)
    if not context.api_key:
        context.use_cached_tokens()
    who = context.whoami()
    if who is None:
        typer.echo("Not authenticated.")
        return
    for identity in who.get("identities", []):
        typer.echo(f"{identity.get('id')} ({identity.get('provider')})")
    if not who.get("identities"):
        typer.echo(str(who.get("uuid")))


def tree(
    max_lines: int = typer.Argument(20, help="Print at most this many lines."),
    profile: str | None = PROFILE,
    uri: str | None = URI,
    api_key: str | None = API_KEY,
) -> None:
    """Print the keys of the server's tree, indented by depth."""
    from ..client.constructors import from_context
    from ..client.tree import tree as print_tree

    context = _context(profile, uri, api_key)
    if not context.api_key:
        context.use_cached_tokens()
    print_tree(from_context(context), max_lines=max_lines)


# --- profiles ---


@profile_app.command("paths")
def profile_paths() -> None:
    """The directories searched for profiles, in order of precedence (last wins)."""
    from ..profiles import paths

    for path in paths:
        typer.echo(str(path))


@profile_app.command("list")
def profile_list() -> None:
    """The names of the profiles, with the file defining each."""
    from ..profiles import load_profiles

    profiles = load_profiles()
    if not profiles:
        typer.echo("No profiles found.", err=True)
        return
    width = max(len(name) for name in profiles) + 4
    for name, (file, _) in sorted(profiles.items()):
        typer.echo(f"{name:<{width}}{file}")


@profile_app.command("show")
def profile_show(name: str) -> None:
    """A profile's settings, as YAML."""
    import yaml

    from ..profiles import load_profiles

    profiles = load_profiles()
    if name not in profiles:
        _fail(f"no profile {name!r} (tiled profile list shows the names)")
    file, settings = profiles[name]
    typer.echo(f"# from {file}", err=True)
    typer.echo(yaml.safe_dump(settings, sort_keys=False).rstrip())


@profile_app.command("create")
def profile_create(
    uri: str = typer.Argument(..., help="Server URL, http[s]://..."),
    name: str = typer.Option("auto", "--name", help="Profile name, a short alias."),
    set_default: bool = typer.Option(
        True, "--set-default/--no-set-default", help="Make it the default profile."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a profile of this name."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip TLS verification."),
) -> None:
    """Add a profile to the user's profiles directory."""
    from ..profiles import ProfileError, create_profile, set_default_profile_name

    try:
        path = create_profile(uri=uri, name=name, verify=not no_verify, overwrite=overwrite)
    except (ProfileError, FileExistsError) as error:  # ProfileExists is both
        _fail(str(error))
    if set_default:
        set_default_profile_name(name)
    typer.echo(f"Wrote {path}{' (the default profile)' if set_default else ''}", err=True)


@profile_app.command("delete")
def profile_delete(name: str) -> None:
    """Remove a profile's file (as ``tiled profile create`` wrote it); no longer the default."""
    from ..profiles import (
        ProfileError,
        delete_profile,
        get_default_profile_name,
        set_default_profile_name,
    )

    try:
        deleted = delete_profile(name)
    except ProfileError as error:
        _fail(str(error))
    if get_default_profile_name() == name:
        set_default_profile_name(None)
    if deleted is None:
        _fail(f"no profile file for {name!r}")


@profile_app.command("set-default")
def profile_set_default(name: str) -> None:
    """Use this profile when none is named."""
    from ..profiles import ProfileNotFound, set_default_profile_name

    try:
        set_default_profile_name(name)
    except ProfileNotFound:
        _fail(f"no profile {name!r}")


@profile_app.command("get-default")
def profile_get_default() -> None:
    """The name of the default profile."""
    from ..profiles import get_default_profile_name

    name = get_default_profile_name()
    typer.echo(name if name is not None else "No default profile.")


@profile_app.command("clear-default")
def profile_clear_default() -> None:
    """Have no default profile."""
    from ..profiles import set_default_profile_name

    set_default_profile_name(None)


def register_commands(app: typer.Typer) -> None:
    for name, command in (("login", login), ("logout", logout), ("whoami", whoami),
                          ("tree", tree)):  # fmt: skip
        app.command(name)(command)
    app.add_typer(profile_app, name="profile")


__all__ = ["profile_app", "register_commands"]
