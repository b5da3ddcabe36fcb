"""The organisation's AWS credentials on requests to Amazon Bedrock: SigV4, signed by botocore.

Credentials come from botocore's standard chain (environment, shared config and credentials files,
web identity as in EKS IRSA, container and instance roles). Those that expire (roles) are refreshed
off the event loop, a minute at a time, so signing a request never waits on STS. Imported only by a
gateway started with --bedrock-upstream (botocore takes a fifth of a second to import).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, Final

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from botocore.session import Session

logger = logging.getLogger("spendgate.proxy")

SERVICE: Final = "bedrock"
REFRESH_SECONDS: Final = 60.0
class SigV4Signer:
    """Signs each request with the organisation's AWS credentials (botocore's standard chain)."""

    def __init__(self, region: str, session: Session | None = None) -> None:
        self.region = region
        self._credentials: Credentials | None = (session or Session()).get_credentials()
        if self._credentials is None:
            raise ValueError("no AWS credentials found (environment, ~/.aws, web identity, container or instance "
                             "role)")
        self._frozen: ReadOnlyCredentials = self._credentials.get_frozen_credentials()

    def __call__(self, method: str, url: str, headers: list[tuple[str, str]], body: bytes) -> None:
        request = AWSRequest(method=method, url=url, data=body)
        for name, value in headers:
            request.headers[name] = value  # HTTP headers append: a repeated header stays repeated
        SigV4Auth(self._frozen, SERVICE, self.region).add_auth(request)
        headers.extend((name, request.headers[name]) for name in ("X-Amz-Date", "X-Amz-Security-Token",
                                                                    "Authorization") if name in request.headers)

    async def refresh_forever(self) -> None:
        """Keep the frozen credentials current; expiring ones (roles) refresh here, never on a request."""
        assert self._credentials is not None
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                self._frozen = await asyncio.to_thread(self._credentials.get_frozen_credentials)
            except Exception as error:  # keep the last credentials; AWS says so if they expired
                logger.warning("could not refresh the AWS credentials (%s); signing with the last ones",
                               type(error).__name__)


REGION_IN_HOST: Final = re.compile(r"bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com")


def region_of(upstream_url: str, configured: str | None, session: Session | None = None) -> str | None:
    """The signing region: the flag, else the one in the endpoint's host name, else the AWS configuration."""
    if configured:
        return configured
    found = REGION_IN_HOST.search(upstream_url)
    if found:
        return found.group(1)
    region: Any = (session or Session()).get_config_variable("region")
    return str(region) if region else None
