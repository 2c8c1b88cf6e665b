"""The browser pages of a device-code login: where the user types the code the terminal
shows, and what they see afterwards. Plain HTML, every value escaped."""

from __future__ import annotations

from html import escape
from urllib.parse import quote

from fastapi.responses import HTMLResponse

UNKNOWN_CODE = (
    "Invalid user code. It may have been mistyped, or the pending request may have expired."
)

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Tiled login</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: sans-serif; max-width: 32em; margin: 3em auto">
{body}
</body>
</html>
"""


def _page(body: str, status_code: int = 200) -> HTMLResponse:
    # The pages hold a one-time code: no cache may keep them, no other site frame them.
    headers = {"Cache-Control": "no-store", "X-Frame-Options": "DENY"}
    return HTMLResponse(_PAGE.format(body=body), status_code=status_code, headers=headers)


def form(code: str, message: str = "", status_code: int = 200) -> HTMLResponse:
    """Ask for the user code; the provider's authorization ``code`` rides along."""
    note = f'<p style="color: #a00">{escape(message)}</p>' if message else ""
    return _page(
        f"""<h1>Log in to Tiled</h1>
{note}<p>Enter the code your terminal shows.</p>
<form method="post" action="?code={escape(quote(code, safe=""))}">
<input type="hidden" name="code" value="{escape(code)}">
<input name="user_code" placeholder="XXXX-XXXX" autofocus autocomplete="off" required>
<button type="submit">Log in</button>
</form>""",
        status_code,
    )


def success() -> HTMLResponse:
    return _page(
        "<h1>Logged in</h1><p>You may close this page: your terminal is logged in within "
        "a few seconds.</p>"
    )


def failure(reason: str = "", status_code: int = 401) -> HTMLResponse:
    """The login did not happen: the identity provider refused it, or ``reason``."""
    why = (
        f"<p>{escape(reason)}</p>"
        if reason
        else "<p>The code was right, but the identity provider did not confirm the login. "
        "An administrator can find the reason in the server's log.</p>"
    )
    return _page(f"<h1>Login failed</h1>{why}<p>Start again from your terminal.</p>", status_code)
