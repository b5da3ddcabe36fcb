"""Budgets as `kubectl get budgets` shows them, from the gateway: every budget on the admin port
(`GET /budgets`), and a developer's own on the client port (`GET /spendgate/v1/budgets`, with the
virtual key, as `spendgate statusline` reads it).

The client-port route lies outside `/v1/`, so it can never shadow an Anthropic endpoint (the
gateway forwards every other `/v1/` path upstream), and it is answered before the gateway sees the
request: a status poll is no API request, so it has no ledger line. A developer sees the budgets
that cover them (their cost center's and its ancestors', theirs, their key's, and the repository's
they name with `x-spendgate-repo`), no one else's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final, Protocol

import orjson

from spendgate.logic.budgetview import BudgetViews
from spendgate.logic.enforcement import Caller
from spendgate.policy.bundle import SignedBundle
from spendgate.proxy.asgi import App, Receive, Scope, Send, respond
from spendgate.proxy.attribution import REPO_HEADER, attribute, credential, identify
from spendgate.proxy.bundles import BundleHolder
from spendgate.proxy.errors import ProxyError, error_body, new_request_id

OWN_PREFIX: Final = "/spendgate/"
OWN_BUDGETS: Final = "/spendgate/v1/budgets"
JSON: Final = [(b"content-type", b"application/json")]


class BudgetReader(Protocol):
    """Budget views from what this proxy knows of spend (spendgate.proxy.enforce.BudgetAdmission)."""

    def all_budgets(self, signed: SignedBundle, now: datetime) -> BudgetViews: ...

    def budgets_of(self, signed: SignedBundle, caller: Caller, now: datetime) -> BudgetViews: ...


def views_json(views: BudgetViews) -> bytes:
    return orjson.dumps(views.model_dump(mode="json"))


class OwnBudgets:
    """The client port's `/spendgate/` routes (plain ASGI, like the gateway)."""

    def __init__(self, bundles: BundleHolder, reader: BudgetReader) -> None:
        self._bundles = bundles
        self._reader = reader

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = new_request_id()
        try:
            body = self._answer(scope)
        except ProxyError as error:
            headers = [*JSON, (b"request-id", request_id.encode())]
            await respond(send, error.status, headers, error_body(error.error_type, error.message, request_id))
            return
        await respond(send, 200, [*JSON, (b"request-id", request_id.encode()), (b"cache-control", b"no-store")], body)

    def _answer(self, scope: Scope) -> bytes:
        if scope["path"].rstrip("/") != OWN_BUDGETS:
            raise ProxyError("not_found_error", f"{scope['path']} is not served: the gateway's own route is "
                                                f"GET {OWN_BUDGETS}")
        if scope["method"] != "GET":
            raise ProxyError("invalid_request_error", f"{OWN_BUDGETS} answers GET only", 405)
        headers = dict(scope["headers"])  # the last of a repeated header wins; only three are read
        active = self._bundles.current
        now = datetime.now(UTC)
        identity = identify(credential(headers.get(b"x-api-key"), headers.get(b"authorization")), active.owners,
                            active.keys, now)
        repository = attribute(identity, {REPO_HEADER: headers.get(REPO_HEADER, b"")}, None).repo
        caller = Caller(identity.developer, identity.cost_center, identity.key_name, repository)
        return views_json(self._reader.budgets_of(active.signed, caller, now))


class ClientPort:
    """What the client port serves: the gateway, and the `/spendgate/` routes in front of it."""

    def __init__(self, gateway: App, own: OwnBudgets) -> None:
        self._gateway = gateway
        self._own = own

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(OWN_PREFIX):
            await self._own(scope, receive, send)
        else:
            await self._gateway(scope, receive, send)
