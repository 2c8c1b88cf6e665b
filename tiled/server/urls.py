"""The absolute base URL of the API, as the client reached it."""

from fastapi import Request

from .headers import header_map


def base_url(request: Request) -> str:
    headers = header_map(request)
    host = headers.get("x-forwarded-host") or headers.get("host") or "localhost"
    scheme = headers.get("x-forwarded-proto") or request.scope.get("scheme", "http")
    return f"{scheme}://{host}{request.scope.get('root_path', '')}/api/v1"
