"""Token authentication of the HTTP API (DESIGN.md §4, §6).

Tokens are random high-entropy strings (`telemetryd hash-token` makes them with
`secrets.token_urlsafe(32)`), so a fast unkeyed hash is the right way to store them: the
configuration holds `sha256:<hex>` of each token, never the token. A presented token is hashed
and compared with `hmac.compare_digest` against every configured hash, all of them, so the time
taken does not tell which one matched. A verified token's identity is then cached under the
raw Authorization header that carried it, so the next requests sending the same header cost
one dict lookup (no parsing, no sha256). The cache belongs to the Authenticator, which a
SIGHUP reload replaces with a new one: a revoked token stops working at once.

The identity (`__origin__.user`) comes only from the token, never from the request body.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from telemetryd.config import AuthSettings

HASH_PREFIX: Final = "sha256:"
HASH_PATTERN: Final = re.compile(r"sha256:[0-9a-f]{64}")
SCHEMES: Final = ("token", "bearer")
REALM: Final = 'Bearer realm="telemetryd"'
#: Verified Authorization headers kept before the cache is emptied and refilled.
CACHE_MAX_TOKENS: Final = 256

UNAUTHENTICATED: Final = "unauthenticated"
FORBIDDEN: Final = "forbidden"


def hash_token(token: str) -> str:
    """The stored form of a token: `sha256:` and the hex digest of its UTF-8 bytes."""
    return HASH_PREFIX + hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def _schema_filter(patterns: Sequence[str]) -> Callable[[str], bool] | None:
    """A schema id test for a token's allowed_schemas globs; None when it may send all."""
    if not patterns:
        return None
    # fnmatch.translate, as [schemas] allowed: case-sensitive on every OS, as URIs are.
    match = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)).match
    seen: dict[str, bool] = {}

    def permits(schema_id: str) -> bool:
        verdict = seen.get(schema_id)
        if verdict is None:
            verdict = match(schema_id) is not None
            if len(seen) < 1024:
                seen[schema_id] = verdict
        return verdict

    return permits


@dataclass(frozen=True, eq=False)
class Identity:
    """Who a verified token speaks for, and which schemas it may send."""

    user: str
    permits: Callable[[str], bool] | None = field(default=None, repr=False)  # None: all

    def allows(self, schema_id: str) -> bool:
        return self.permits is None or self.permits(schema_id)


@dataclass(frozen=True, slots=True)
class AuthFailure:
    status: int  # 401: no usable credentials; 403: a token that is not configured
    reason: str
    message: str


MISSING: Final = AuthFailure(
    401,
    UNAUTHENTICATED,
    "authentication required: send Authorization: token <token> (or Bearer <token>)",
)
UNKNOWN: Final = AuthFailure(403, FORBIDDEN, "the token is not valid")


@dataclass(frozen=True, slots=True)
class _Stored:
    digest: bytes
    identity: Identity


class Authenticator:
    """Checks a request's Authorization header against the configured tokens."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self._tokens = tuple(
            _Stored(
                bytes.fromhex(token.hash.removeprefix(HASH_PREFIX)),
                Identity(token.identity, _schema_filter(token.allowed_schemas)),
            )
            for token in settings.tokens
        )
        #: Without tokens there is nothing to check against: the header is ignored.
        self.enabled = bool(self._tokens)
        #: Authorization header values already verified, and the identity of their token.
        self._cache: dict[bytes, Identity] = {}

    def authenticate(
        self, header: bytes | None, *, required: bool
    ) -> Identity | AuthFailure | None:
        """The token's identity; None for an anonymous request that may go on; or the failure.

        No header (or one of another scheme, or without a token) is anonymous, which an
        endpoint that requires a token answers 401. A token that matches no configured hash is
        403 whether or not the endpoint requires one: a client that sends credentials expects
        them checked.
        """
        if header is None or not self.enabled:
            return MISSING if required else None
        identity = self._cache.get(header)
        if identity is not None:
            return identity  # this exact header was verified (in constant time) before
        token = _token(header)
        if token is None:
            return MISSING if required else None
        digest = hashlib.sha256(token).digest()
        for stored in self._tokens:  # all of them: no early exit on a match
            if hmac.compare_digest(digest, stored.digest):
                identity = stored.identity
        if identity is None:
            return UNKNOWN
        if len(self._cache) >= CACHE_MAX_TOKENS:
            self._cache.clear()
        self._cache[bytes(header)] = identity
        return identity


def _token(header: bytes) -> bytes | None:
    """The token of `token <t>` or `Bearer <t>` (scheme in any case); None otherwise."""
    scheme, _, rest = header.strip().partition(b" ")
    token = rest.strip()
    if scheme.lower().decode("latin-1") not in SCHEMES or not token or b" " in token:
        return None
    return token
