"""The absolute base URL of the API, as the client reached it."""

from fastapi import Request


def base_url(request: Request) -> str:
    host = request.headers.get("x-forwarded-host") or request.headers.get("host") or "localhost"
    scheme = request.headers.get("x-forwarded-proto") or request.scope.get("scheme", "http")
    return f"{scheme}://{host}{request.scope.get('root_path', '')}/api/v1"
