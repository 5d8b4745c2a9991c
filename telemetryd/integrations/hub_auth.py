"""JupyterHub as the identity provider of the HTTP API ([auth.jupyterhub]).

A token that is none of `[[auth.tokens]]` is shown to JupyterHub as JupyterHub's own services
check tokens since JupyterHub 2 (`HubAuth.user_for_token`): `GET {api_url}/user` with the
token itself as `Authorization: token <t>`. Every token may identify its owner there, so
telemetryd needs no token of its own. The hub answers 200 with the owner's model
(`{"kind": "user", "name": "alice", "groups": [...], "scopes": [...]}`, or `"kind": "service"`),
and 403 for a token it does not know.

The answers are cached under the Authorization header that carried the token: a valid token's
for `cache_secs` (the request costs one dict lookup and a clock read, no await), a refused
token's for `negative_cache_secs`. Only a miss awaits the hub: concurrent misses for one header
share one call, at most `max_concurrent_requests` calls are in flight, and a request waits at
most `timeout_secs` for its answer. A hub that cannot be asked (unreachable, too slow, 5xx or
an answer that is not a model) is a 503 with Retry-After, never cached and never let through.

The cache belongs to the HubVerifier, which a SIGHUP reload replaces with its Authenticator;
the connection pool (HubClient) is the HTTP API's and lasts as long as the daemon.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, TypeVar

import anyio
import msgspec

from telemetryd import __version__
from telemetryd.auth import FORBIDDEN, AuthFailure, Identity
from telemetryd.config import JupyterHubSettings

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("telemetryd")

_V = TypeVar("_V")

HUB_UNAVAILABLE: Final = "hub_unavailable"
#: Retry-After of a 503 for a hub that could not be asked.
HUB_RETRY_AFTER_SECS: Final = 5
#: Answers kept about valid tokens, and about refused ones, before the oldest go.
CACHE_MAX_TOKENS: Final = 4096
REFUSED_MAX_TOKENS: Final = 1024

#: The hub's answer about a token it does not know (401 or 403).
REFUSED: Final = AuthFailure(403, FORBIDDEN, "JupyterHub does not accept the token")

#: The clock of the caches (tests replace it).
now: Callable[[], float] = time.monotonic


class HubUnreachable(Exception):
    """The hub could not be asked: no connection, a broken one, or its own timeout."""


class HubClient:
    """The connections to the hub (httpx, made on first use), kept across reloads."""

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None

    async def get(self, url: str, token: bytes, timeout_secs: float) -> tuple[int, bytes]:
        """(status, body) of GET `url` with `Authorization: token <token>`."""
        import httpx

        client = self._client
        if client is None:
            client = self._client = httpx.AsyncClient(
                headers={"user-agent": f"telemetryd/{__version__}", "accept": "application/json"}
            )
        try:
            response = await client.get(
                url, headers={b"authorization": b"token " + token}, timeout=timeout_secs
            )
        except httpx.HTTPError as e:
            raise HubUnreachable(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from e
        return response.status_code, response.content

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


class _Model(msgspec.Struct):
    """What telemetryd reads of the hub's user or service model (other keys are ignored)."""

    kind: str
    name: str
    groups: list[str] = msgspec.field(default_factory=list)
    scopes: list[str] = msgspec.field(default_factory=list)


_decode_model = msgspec.json.Decoder(_Model).decode


class _Pending:
    """A call to the hub that requests sending the same header wait for."""

    __slots__ = ("done", "verdict")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.verdict: Identity | AuthFailure | None = None


def holds_scope(held: list[str], wanted: list[str]) -> bool:
    """Whether a token's scopes include one of `wanted`: the scope itself, or the same scope
    without its filter (`access:services` covers `access:services!service=x`), as JupyterHub's
    check_scopes resolves them (group filters are not resolved to their users)."""
    have = set(held)
    return any(scope in have or scope.partition("!")[0] in have for scope in wanted)


class HubVerifier:
    """Asks JupyterHub who a token belongs to, and remembers the answer for a while."""

    def __init__(
        self,
        settings: JupyterHubSettings,
        client: HubClient,
        permits: Callable[[str], bool] | None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.url = settings.api_url + "/user"
        self._permits = permits
        self._users = frozenset(settings.allowed_users)
        self._groups = frozenset(settings.allowed_groups)
        #: header → (until, verdict): the hub's answers about valid tokens, and refusals.
        self._known: dict[bytes, tuple[float, Identity | AuthFailure]] = {}
        self._refused: dict[bytes, tuple[float, AuthFailure]] = {}
        self._pending: dict[bytes, _Pending] = {}
        self._slots: anyio.Semaphore | None = None  # made in the event loop, on first use
        self._failing = False

    # -- the synchronous part: a cached answer -----------------------------------------------

    def cached(self, header: bytes) -> Identity | AuthFailure | None:
        """The answer still cached for this exact header; None: the hub must be asked."""
        entry = self._known.get(header)
        if entry is None:
            refused = self._refused.get(header)
            if refused is None:
                return None
            if refused[0] > now():
                return refused[1]
            del self._refused[header]
            return None
        if entry[0] > now():
            return entry[1]
        del self._known[header]
        return None

    # -- a miss: one call to the hub per header at a time ------------------------------------

    async def verify(self, header: bytes, token: bytes) -> Identity | AuthFailure:
        """The hub's verdict on `token`, shared with the requests that send `header` meanwhile."""
        key = bytes(header)
        while (pending := self._pending.get(key)) is not None:
            await pending.done.wait()
            if pending.verdict is not None:
                return pending.verdict
            # the request that asked was cancelled before the answer: ask again
        pending = self._pending[key] = _Pending()
        try:
            verdict = await self._ask(token)
            self._remember(key, verdict)
            pending.verdict = verdict
        finally:
            del self._pending[key]
            pending.done.set()
        return verdict

    async def _ask(self, token: bytes) -> Identity | AuthFailure:
        settings = self.settings
        if self._slots is None:
            self._slots = anyio.Semaphore(settings.max_concurrent_requests)
        try:
            with anyio.fail_after(settings.timeout_secs):
                async with self._slots:
                    status, body = await self.client.get(self.url, token, settings.timeout_secs)
        except TimeoutError:
            return self._unavailable(
                f"no answer within {settings.timeout_secs} s (timeout_secs)", "timed out"
            )
        except HubUnreachable as e:
            return self._unavailable(str(e), "unreachable")
        if status in (401, 403):
            self._answering()
            return REFUSED
        if status != 200:
            hint = " (is api_url the hub's API, ending in /hub/api?)" if status == 404 else ""
            return self._unavailable(f"answered {status}{hint}", f"answered {status}")
        try:
            model = _decode_model(body)
        except msgspec.DecodeError as e:
            return self._unavailable(f"answered 200 without a user model: {e}", "bad answer")
        if not model.name:
            return self._unavailable("answered 200 with an empty name", "bad answer")
        self._answering()
        return self._judge(model)

    def _judge(self, model: _Model) -> Identity | AuthFailure:
        """The identity of a token the hub knows, or why it is refused all the same."""
        settings = self.settings
        kind, name = model.kind, model.name
        if kind not in settings.kinds:
            accepted = " and ".join(f"{k}s" for k in settings.kinds)
            return AuthFailure(
                403,
                FORBIDDEN,
                f"the token is JupyterHub {kind} {name!r}'s; [auth.jupyterhub] kinds accepts "
                f"{accepted}' tokens only",
            )
        if (
            kind == "user"
            and (self._users or self._groups)
            and name not in self._users
            and self._groups.isdisjoint(model.groups)
        ):
            return AuthFailure(
                403,
                FORBIDDEN,
                f"JupyterHub user {name!r} is in neither allowed_users nor allowed_groups "
                "of [auth.jupyterhub]",
            )
        if settings.access_scopes and not holds_scope(model.scopes, settings.access_scopes):
            return AuthFailure(
                403,
                FORBIDDEN,
                f"the token of JupyterHub {kind} {name!r} holds none of the access_scopes of "
                f"[auth.jupyterhub]: {', '.join(settings.access_scopes)}",
            )
        return Identity(name, self._permits, kind="" if kind == "user" else kind, hub=True)

    def _remember(self, key: bytes, verdict: Identity | AuthFailure) -> None:
        """Caches an answer of the hub: a refused token's briefly, a known token's longer;
        a hub that could not be asked gave no answer, so nothing is cached."""
        if verdict is REFUSED:
            _store(
                self._refused, key, REFUSED, self.settings.negative_cache_secs, REFUSED_MAX_TOKENS
            )
        elif not (isinstance(verdict, AuthFailure) and verdict.reason == HUB_UNAVAILABLE):
            _store(self._known, key, verdict, self.settings.cache_secs, CACHE_MAX_TOKENS)

    # -- the hub's state, logged when it changes ---------------------------------------------

    def _unavailable(self, detail: str, short: str) -> AuthFailure:
        if not self._failing:
            self._failing = True
            log.warning(
                "JupyterHub cannot be asked: tokens not cached are answered 503",
                extra={"fields": {"url": self.url, "error": detail}},
            )
        return AuthFailure(
            503,
            HUB_UNAVAILABLE,
            f"the token cannot be checked: JupyterHub {short}; retry later",
        )

    def _answering(self) -> None:
        if self._failing:
            self._failing = False
            log.info("JupyterHub answers again", extra={"fields": {"url": self.url}})


def _store(
    cache: dict[bytes, tuple[float, _V]], key: bytes, verdict: _V, secs: float, limit: int
) -> None:
    """Keeps `verdict` for `secs`; a full cache drops its expired answers, or all of them."""
    if secs <= 0:
        return
    moment = now()
    if len(cache) >= limit:
        for stale in [k for k, (until, _) in cache.items() if until <= moment]:
            del cache[stale]
        if len(cache) >= limit:
            cache.clear()
    cache[key] = (moment + secs, verdict)
