"""Who may reach the console and what a request may do: the password (HTTP Basic), the host
names answered without one, the CSRF token actions carry, and the headers every page gets.

Apart from the pages so that the rules can be read, and reviewed, in one place; none of it
touches the database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
from typing import Any

from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

OPEN_PATHS = ("/healthz", "/readyz", "/static/")  # probes need no password
USER_KEY = "qlarius.user"  # the request scope's key for the user name the password came with
ROLE_KEY = "qlarius.role"  # the request scope's key for the role the password gives
OPERATOR, VIEWER = "operator", "viewer"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def csrf_token(secret: bytes) -> str:
    """The token every form carries: fixed for the process, so no session is needed."""
    return hmac.new(secret, b"csrf", hashlib.sha256).hexdigest()


def check_csrf(given: str, expected: str) -> None:
    """403 unless ``given`` is the token (compared in constant time)."""
    token = given.encode("utf-8", "replace")
    if not hmac.compare_digest(token, expected.encode()):
        raise HTTPException(403, detail="missing or wrong CSRF token: reload the page")


def actor(scope: dict[str, Any]) -> str:
    """Who acts, for the ``updated_by`` of the controls: ``console:<user>`` with the user name
    the password came with (any name is accepted, so it is a label, not a proof), else
    ``console``. A name that is empty, too long or not printable counts as none."""
    user = str(scope.get(USER_KEY) or "")
    if user and len(user) <= 64 and user.isprintable():
        return f"console:{user}"
    return "console"


def role(scope: dict[str, Any]) -> str:
    """``viewer`` when the request came with QLARIUS_WEB_READONLY_PASSWORD, else
    ``operator`` (QLARIUS_WEB_PASSWORD, or no password at all on a loopback console)."""
    return VIEWER if scope.get(ROLE_KEY) == VIEWER else OPERATOR


def read_only(request: Request) -> bool:
    """Whether this request may see and use actions: not in read-only mode, nor as a viewer."""
    return bool(request.app.state.config.read_only) or role(request.scope) == VIEWER


def refuse_if_read_only(request: Request) -> None:
    """403 for an action in read-only mode or from a viewer (before its form is even read)."""
    if request.app.state.config.read_only:
        raise HTTPException(403, detail="the console is read-only (QLARIUS_WEB_READ_ONLY)")
    if role(request.scope) == VIEWER:
        raise HTTPException(
            403, detail="the console is read-only for viewers (QLARIUS_WEB_READONLY_PASSWORD)"
        )


def middleware(
    password: str | None, hosts: list[str], readonly_password: str | None = None
) -> list[Middleware]:
    """The console's middleware, outermost first."""
    stack = [Middleware(SecurityHeaders)]
    if not password:
        # Without a password, a page fetched through another host name (DNS rebinding: a web
        # page the operator visits, resolving its own name to 127.0.0.1) must get nothing.
        stack.insert(0, Middleware(TrustedHostMiddleware, allowed_hosts=hosts))
    if password:
        stack.insert(
            0, Middleware(BasicAuth, password=password, readonly_password=readonly_password)
        )
    return stack


class BasicAuth(BaseHTTPMiddleware):
    """Every page but the probes asks for a password (any user name): QLARIUS_WEB_PASSWORD
    makes an operator, QLARIUS_WEB_READONLY_PASSWORD (when set) a viewer."""

    def __init__(self, app: Any, password: str, readonly_password: str | None = None) -> None:
        super().__init__(app)
        self.password = password.encode()
        self.readonly_password = readonly_password.encode() if readonly_password else None

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        # scope["path"] is what the router serves; request.url is built from the client's
        # Host header and must never decide who gets in.
        if str(request.scope["path"]).startswith(OPEN_PATHS):
            return await call_next(request)
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, given = base64.b64decode(encoded, validate=True).partition(b":")
            except (binascii.Error, ValueError):
                user, given = b"", b""
            operator = hmac.compare_digest(given, self.password)
            viewer = self.readonly_password is not None and hmac.compare_digest(
                given, self.readonly_password
            )
            if operator or viewer:
                request.scope[USER_KEY] = user.decode("utf-8", "replace")
                request.scope[ROLE_KEY] = OPERATOR if operator else VIEWER
                return await call_next(request)
        return PlainTextResponse(
            "password required\n",
            status_code=401,
            headers={"WWW-Authenticate": 'Basic realm="qlarius-jobs", charset="UTF-8"'},
        )


class SecurityHeaders(BaseHTTPMiddleware):
    """No framing, no sniffing, no scripts from anywhere: the pages need none."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self' data:; "
            "frame-ancestors 'none'; form-action 'self'"
        )
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        return response
