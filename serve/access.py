"""Who may use a served plan: an API key, read once at start and checked on every request in constant time.

A server started with a key (``--api-key``, ``--api-key-file`` or the environment variable
:data:`API_KEY_ENV`) answers only requests that carry ``Authorization: Bearer KEY``, as OpenAI's
clients send their key. The key itself goes no further than :func:`read_api_key`: the server keeps its
SHA-256 (:func:`key_digest`), and :func:`bearer_matches` compares the digest of what a request carries
with it by :func:`hmac.compare_digest`, so neither the time of the comparison nor a log, a Ray Serve
deployment's arguments or ``GET /v1/plan`` tells anything about the key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["API_KEY_ENV", "bearer_matches", "key_digest", "read_api_key"]

#: The environment variable ``genedge serve`` and ``genedge loadtest`` read the key from when no option gives one.
API_KEY_ENV = "GENEDGE_API_KEY"


def _checked(key: str, where: str) -> str:
    """``key`` if it can travel in an ``Authorization`` header (printable ASCII, no spaces); the error names
    ``where`` and never shows the key."""
    if not key:
        raise ValueError(f"{where}: expected an API key, but it is empty")
    if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
        raise ValueError(f"{where}: expected an API key of printable ASCII characters without spaces")
    return key


def read_api_key(
    api_key: str | None = None, api_key_file: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The API key a server requires, by precedence: ``api_key``, else the first line of ``api_key_file``, else
    the environment's :data:`API_KEY_ENV` (when set and not empty); None: no key, every route is open.

    Args:
        api_key: the key itself (on a command line it is visible to other users of the machine: prefer a file).
        api_key_file: a file whose first line is the key (surrounding whitespace is dropped).
        environ: the environment to read (default: this process's).

    Raises:
        ValueError: both ``api_key`` and ``api_key_file`` given, an unreadable file, or a key that cannot be
            sent in an HTTP header (the message never contains the key).
    """
    if api_key is not None and api_key_file is not None:
        raise ValueError("api_key_file: give the API key or a file that holds it, not both")
    if api_key is not None:
        return _checked(api_key, "api_key")
    if api_key_file is not None:
        try:
            lines = Path(api_key_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"{api_key_file}: cannot read the API key file ({type(err).__name__})") from err
        return _checked(lines[0].strip() if lines else "", str(api_key_file))
    value = (os.environ if environ is None else environ).get(API_KEY_ENV)
    return _checked(value.strip(), API_KEY_ENV) if value and value.strip() else None


def key_digest(key: str) -> str:
    """The SHA-256 of a key (hex): what a server keeps instead of the key."""
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def bearer_matches(authorization: str | None, digest: str) -> bool:
    """Whether an ``Authorization`` header carries the key whose :func:`key_digest` is ``digest``.

    The scheme is ``Bearer`` (any case, as RFC 7235 allows); the token's digest is compared with
    :func:`hmac.compare_digest`, so the time taken does not depend on how much of the key was right.
    """
    if authorization is None:
        return False
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or not token.isascii():
        return False
    return hmac.compare_digest(key_digest(token), digest)
