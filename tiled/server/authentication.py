"""Authentication under its former module name, which is upstream's too.

The pieces live by concern: :mod:`.credentials` (reading a request's credentials),
:mod:`.authenticators` (who a request is: the single- and multi-user authenticators),
:mod:`.tokens` (JWTs), :mod:`.failure_delays` (slowing password guessing), :mod:`.csrf`,
:mod:`.openapi_security`, and the routes in :mod:`.api.auth` and :mod:`.api.principals`.
This module re-exports their public names, and is the home of the two limits below.
"""

from .authenticators import (
    ANONYMOUS,
    ANONYMOUS_PUBLIC,
    SINGLE_USER,
    CurrentIdentity,
    MultiUserAuthenticator,
    SingleUserAuthenticator,
    UnscalableConfig,
    build_authenticator,
    get_identity,
)
from .credentials import Credentials, read_api_key, read_credentials
from .csrf import CSRFMiddleware
from .failure_delays import FailureDelays
from .openapi_security import API_KEY_SCHEMES, install_openapi_security
from .tokens import TokenSigner, create_access_token, decode_token

# Most API keys one principal may hold, and most sessions it may have open (unexpired,
# revoked or not), as upstream limits them. They are set here because upstream's tests and
# tools set them on this module; the server reads them here at each use.
API_KEY_LIMIT = 100
SESSION_LIMIT = 200

__all__ = [
    "ANONYMOUS",
    "ANONYMOUS_PUBLIC",
    "API_KEY_LIMIT",
    "API_KEY_SCHEMES",
    "CSRFMiddleware",
    "Credentials",
    "CurrentIdentity",
    "FailureDelays",
    "MultiUserAuthenticator",
    "SESSION_LIMIT",
    "SINGLE_USER",
    "SingleUserAuthenticator",
    "TokenSigner",
    "UnscalableConfig",
    "build_authenticator",
    "create_access_token",
    "decode_token",
    "get_identity",
    "install_openapi_security",
    "read_api_key",
    "read_credentials",
]
