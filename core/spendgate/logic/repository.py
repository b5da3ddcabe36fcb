"""One spelling per repository, so a Repository budget matches however the tag was written.

Developers set the repository tag themselves (`x-spendgate-repo` through ANTHROPIC_CUSTOM_HEADERS),
from a clone URL or by hand: `https://github.com/Acme/Payments-API.git`,
`git@github.com:acme/payments-api.git` and `acme/payments-api` are one repository. The normal form
is the lower-case path without host, scheme, user, port, `.git` suffix or surrounding slashes:
`acme/payments-api` (GitLab subgroups keep their depth: `group/sub/repo`). Budget scope names are
normalised the same way before matching.
"""

from __future__ import annotations

import re
from typing import Final

_SCHEME: Final = re.compile(r"^[a-z][a-z0-9+.-]*://")
_USER: Final = re.compile(r"^[^@/]*@")


def normalize_repository(tag: str) -> str | None:
    """The repository's normal form, or None if nothing is left of the tag."""
    text = _USER.sub("", _SCHEME.sub("", tag.strip().lower()))
    first, slash, rest = text.partition("/")
    if ":" in first:  # scp-style host:owner/repo, or host:port/owner/repo
        after_colon = first.split(":", 1)[1]
        text = rest if after_colon.isdigit() or not after_colon else f"{after_colon}{slash}{rest}"
    elif "." in first and rest.count("/") >= 1:  # a host name before owner/repo
        text = rest
    text = text.strip("/ ").removesuffix(".git").strip("/ ")
    return re.sub(r"/+", "/", text) or None
