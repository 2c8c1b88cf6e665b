"""The JSON shapes of principals, API keys and sessions (as upstream Tiled reports them).

UUIDs are written in their 32-character hex form, as in tokens (``sub``, ``sid``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from . import orm


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (
        value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    ).isoformat()


def api_key_json(key: orm.APIKey, secret: str | None = None) -> dict[str, Any]:
    payload = {
        "first_eight": key.first_eight,
        "expiration_time": iso(key.expiration_time),
        "note": key.note,
        "scopes": list(key.scopes),
        "access_tags": key.access_tags,
        "latest_activity": iso(key.latest_activity),
    }
    if secret is not None:
        payload["secret"] = secret
    return payload


def session_json(session: orm.Session) -> dict[str, Any]:
    return {
        "uuid": str(session.uuid),
        "expiration_time": iso(session.expiration_time),
        "revoked": session.revoked,
        # Not the state: it may hold a provider's tokens (EntraAuthenticator), which no one
        # listing sessions (an admin) should read. Upstream lists sessions without it too.
    }


def principal_json(
    principal: orm.Principal, api_keys: list[orm.APIKey], sessions: list[orm.Session]
) -> dict[str, Any]:
    moments = [identity.latest_login for identity in principal.identities]
    moments += [key.latest_activity for key in api_keys]
    moments += [session.time_last_refreshed or session.time_created for session in sessions]
    known = [moment for moment in moments if moment is not None]
    return {
        "uuid": str(principal.uuid),
        "type": principal.type,
        "identities": [
            {"id": i.id, "provider": i.provider, "latest_login": iso(i.latest_login)}
            for i in principal.identities
        ],
        "roles": [{"name": role.name, "scopes": list(role.scopes)} for role in principal.roles],
        "api_keys": [api_key_json(key) for key in api_keys],
        "sessions": [session_json(session) for session in sessions],
        "latest_activity": iso(max(known)) if known else None,
    }
