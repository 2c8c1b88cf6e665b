"""How credentials reach the server (see :func:`tiled.server.credentials.read_credentials`),
described as security schemes in the OpenAPI document (``/openapi.json``).

They document the API only: every route's identity comes from ``get_identity``, which reads
all of them.
"""

from __future__ import annotations

from typing import Any

API_KEY_SCHEMES: dict[str, dict[str, Any]] = {
    "APIKeyQuery": {"type": "apiKey", "in": "query", "name": "api_key"},
    "APIKeyHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "'Apikey SECRET' (or 'Bearer ACCESS_TOKEN' from a login)",
    },
    "APIKeyCookie": {"type": "apiKey", "in": "cookie", "name": "tiled_api_key"},
}
TOKEN_ROUTE = "/auth/provider/{provider}/token"


def install_openapi_security(app: Any, prefix: str = "/api/v1") -> None:
    """Describe the server's credentials in its OpenAPI document (``/openapi.json``).

    With login providers, upstream's ``OAuth2PasswordBearer`` scheme names the first
    provider's token route as ``tokenUrl``; that route is documented under its concrete path
    too, so the ``tokenUrl`` is one of the document's paths (documentation tools follow it).
    """
    build_schema = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build_schema()
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes.update(API_KEY_SCHEMES)
        providers = list(getattr(app.state.tiled.authenticator, "providers", None) or ())
        templated = schema.get("paths", {}).get(prefix + TOKEN_ROUTE)
        if providers and templated is not None:
            token_url = prefix + TOKEN_ROUTE.format(provider=providers[0])
            schemes["OAuth2PasswordBearer"] = {
                "type": "oauth2",
                "flows": {
                    "password": {
                        "tokenUrl": token_url,
                        "refreshUrl": f"{prefix}/auth/session/refresh",
                        "scopes": {},
                    }
                },
            }
            for name in providers:
                schema["paths"][prefix + TOKEN_ROUTE.format(provider=name)] = (
                    _token_route_of_provider(templated, name)
                )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


def _token_route_of_provider(path_item: dict[str, Any], provider: str) -> dict[str, Any]:
    """The token route's documentation for one provider: without the ``provider`` parameter."""
    item = {}
    for method, operation in path_item.items():
        parameters = [p for p in operation.get("parameters", []) if p.get("name") != "provider"]
        item[method] = {
            **operation,
            "parameters": parameters,
            "operationId": f"{operation.get('operationId', 'login')}_{provider}",
        }
    return item
