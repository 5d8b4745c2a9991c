"""Token authentication of the HTTP API (docs/http-api.md, Authentication).

Tokens are random high-entropy strings (`telemetryd hash-token` makes them with
`secrets.token_urlsafe(32)`), so a fast unkeyed hash is the right way to store them: the
configuration holds `sha256:<hex>` of each token, never the token. A presented token is hashed
and compared with `hmac.compare_digest` against every configured hash, all of them, so the time
taken does not tell which one matched. A verified token's identity is then cached under the
raw Authorization header that carried it, so the next requests sending the same header cost
one dict lookup (no parsing, no sha256). The cache belongs to the Authenticator, which a
SIGHUP reload replaces with a new one: a revoked token stops working at once.

With `[auth.jupyterhub]`, a token that matches none of the configured hashes is shown to
JupyterHub (telemetryd.integrations.hub_auth): a cached answer is returned here at once, and
only a miss returns a coroutine for the caller to await.

The identity (`__origin__.user`) comes only from the token, never from the request body.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from telemetryd.config import AuthSettings

if TYPE_CHECKING:
    from telemetryd.integrations.hub_auth import HubClient, HubVerifier

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
    #: JupyterHub's kind of the token's owner when it is not a user ("service"), which
    #: `__origin__.kind` then tells; "" for users and [[auth.tokens]].
    kind: str = ""
    hub: bool = False  # vouched for by JupyterHub, not one of [[auth.tokens]]

    @property
    def allowed_schemas_key(self) -> str:
        """Where the allowed_schemas that apply to this identity are configured."""
        return (
            "[auth.jupyterhub] allowed_schemas"
            if self.hub
            else "allowed_schemas in [[auth.tokens]]"
        )

    def allows(self, schema_id: str) -> bool:
        return self.permits is None or self.permits(schema_id)


@dataclass(frozen=True, slots=True)
class AuthFailure:
    status: int  # 401: no usable credentials; 403: a token not accepted; 503: hub not asked
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


#: What authenticate() answers: a verdict now, or (a JupyterHub cache miss) one to await.
Verdict = Identity | AuthFailure | None
Pending = Coroutine[Any, Any, Identity | AuthFailure]


class Authenticator:
    """Checks a request's Authorization header against the configured tokens, then JupyterHub."""

    def __init__(self, settings: AuthSettings, hub_client: HubClient | None = None) -> None:
        """`hub_client`: the connections to JupyterHub, the caller's to close (one is made
        when none is given and [auth.jupyterhub] is configured: close `hub.client` then)."""
        self.settings = settings
        self._tokens = tuple(
            _Stored(
                bytes.fromhex(token.hash.removeprefix(HASH_PREFIX)),
                Identity(token.identity, _schema_filter(token.allowed_schemas)),
            )
            for token in settings.tokens
        )
        self.hub: HubVerifier | None = None
        if settings.jupyterhub is not None:
            from telemetryd.integrations.hub_auth import HubClient, HubVerifier

            hub = settings.jupyterhub
            self.hub = HubVerifier(
                hub, hub_client or HubClient(), _schema_filter(hub.allowed_schemas)
            )
        #: Without tokens nor a hub there is nothing to check against: the header is ignored.
        self.enabled = bool(self._tokens) or self.hub is not None
        #: Authorization header values already verified, and the identity of their token.
        self._cache: dict[bytes, Identity] = {}

    def authenticate(self, header: bytes | None, *, required: bool) -> Verdict | Pending:
        """The token's identity; None for an anonymous request that may go on; or the failure.

        No header (or one of another scheme, or without a token) is anonymous, which an
        endpoint that requires a token answers 401. A token that matches no configured hash is
        403 whether or not the endpoint requires one: a client that sends credentials expects
        them checked. With [auth.jupyterhub] such a token is JupyterHub's to judge: its cached
        answer comes back at once; without one, a coroutine that asks the hub (await it).
        """
        if header is None or not self.enabled:
            return MISSING if required else None
        identity = self._cache.get(header)
        if identity is not None:
            return identity  # this exact header was verified (in constant time) before
        hub = self.hub
        if hub is not None:
            answer = hub.cached(header)
            if answer is not None:
                return answer
        token = _token(header)
        if token is None:
            return MISSING if required else None
        digest = hashlib.sha256(token).digest()
        for stored in self._tokens:  # all of them: no early exit on a match
            if hmac.compare_digest(digest, stored.digest):
                identity = stored.identity
        if identity is None:
            return UNKNOWN if hub is None else hub.verify(header, token)
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
