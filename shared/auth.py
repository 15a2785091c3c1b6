"""Bearer tokens with roles, for every service's HTTP door.

A token is a random string that only its owner holds; a service knows only its sha256
(settings `DRIFTLOOP_AUTH_TOKENS` / `DRIFTLOOP_AUTH_TOKENS_FILE`, see shared/tokens.py) and
compares digests with `hmac.compare_digest`, so neither the settings, the logs nor an error
body ever hold a usable token. Roles are ordered: viewer < operator < admin. Nothing is
trusted for where a request comes from (loopback included): a browser page or any local
process can reach 127.0.0.1 too.

Routes declare what they need with FastAPI dependencies built here (`Authenticator.require`,
`.reads`, `.predict`); `require` answers the `Principal` (name and role), so a handler
records *who* from the token and never from the body. A service with no token configured
refuses every guarded call with 401 and says how to configure one: never open.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from contracts.http import ErrorDetail
from shared.errors import Forbidden, Unauthenticated
from shared.tokens import MAX_TOKEN_LENGTH, Principal, Role, TokenEntry, digest, load_tokens

if TYPE_CHECKING:
    from shared.settings import CommonSettings

__all__ = ["AUTH_RESPONSES", "Authenticator", "Principal", "Role"]

logger = logging.getLogger(__name__)

HOW_TO_CONFIGURE = ("create one with `driftloop token create NAME --role operator` and set "
                    "DRIFTLOOP_AUTH_TOKENS (or DRIFTLOOP_AUTH_TOKENS_FILE) on the service")

_bearer = HTTPBearer(auto_error=False, description="A driftloop token: `driftloop token "
                     "create NAME --role ROLE`, or the local admin token of `driftloop up`.")

_bearer_credentials = Depends(_bearer)

Guard = Callable[..., Awaitable[Principal]]


class Authenticator:
    """Checks bearer tokens against the accepted digests and roles of one service."""

    def __init__(self, tokens: Sequence[TokenEntry], *, open_reads: bool = True,
                 open_predict: bool = True) -> None:
        self._tokens = [(entry.sha256.encode(), Principal(entry.name, entry.role))
                        for entry in tokens]
        self.open_reads = open_reads
        self.open_predict = open_predict

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> Authenticator:
        tokens = load_tokens(settings)
        if tokens:
            logger.info("accepting %d token(s): %s", len(tokens),
                        ", ".join(f"{t.name} ({t.role.value})" for t in tokens))
        else:
            logger.warning("no API token configured: every call that changes state will be "
                           "refused; %s", HOW_TO_CONFIGURE)
        return cls(tokens, open_reads=settings.auth_open_reads,
                   open_predict=settings.auth_open_predict)

    def authenticate(self, token: str | None) -> Principal:
        """The owner of `token`, or Unauthenticated with a reason that never holds it."""
        if not self._tokens:
            raise Unauthenticated(detail="this service accepts no tokens yet, so it refuses "
                                  f"every call that needs one: {HOW_TO_CONFIGURE}")
        if not token:
            raise Unauthenticated(detail="this endpoint needs a bearer token: send "
                                  "'Authorization: Bearer <token>' (`driftloop up` writes a "
                                  "local admin token to secrets/admin.token in its data "
                                  "directory)")
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthenticated(detail="the bearer token is not one this service accepts")
        candidate = digest(token).encode()
        found = None
        for known, principal in self._tokens:  # no early exit: the time says nothing
            if hmac.compare_digest(candidate, known):
                found = principal
        if found is None:
            raise Unauthenticated(detail="the bearer token is not one this service accepts")
        return found

    def require(self, role: Role) -> Guard:
        """A FastAPI dependency: the caller's Principal, if its role is `role` or above."""

        async def guard(request: Request, credentials: HTTPAuthorizationCredentials | None
                        = _bearer_credentials) -> Principal:
            path = request.url.path  # the caller chose it: bounded before it is echoed
            action = f"{request.method} {path if len(path) <= 200 else path[:200] + '…'}"
            try:
                principal = self.authenticate(credentials.credentials if credentials else None)
            except Unauthenticated as exc:
                logger.warning("refused %s: %s", action, exc)
                raise
            if principal.role.rank < role.rank:
                logger.warning("refused %s to %s (%s): needs %s", action, principal.name,
                               principal.role.value, role.value)
                raise Forbidden(detail=f"token {principal.name!r} has role "
                                f"{principal.role.value}; {action} needs {role.value} or above")
            if role.rank >= Role.OPERATOR.rank:  # who changed state, beside the audit log
                logger.info("%s by %s (%s)", action, principal.name, principal.role.value)
            return principal

        return guard

    @property
    def reads(self) -> list[Any]:
        """Route dependencies of a read-only endpoint: none while reads are open."""
        return [] if self.open_reads else [Depends(self.require(Role.VIEWER))]

    @property
    def predict(self) -> list[Any]:
        """Route dependencies of predict: none while predict is open (the hot path pays
        nothing then)."""
        return [] if self.open_predict else [Depends(self.require(Role.VIEWER))]


AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorDetail,
          "description": "No valid bearer token; the body says why (`WWW-Authenticate: Bearer`)."},
    403: {"model": ErrorDetail, "description": "The token's role is too weak for this endpoint."},
}
