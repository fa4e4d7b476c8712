"""Import credentials at rest: sealed before they reach the job table, opened only by the process that reads.

A ``$import`` may carry secrets: ``storageDetail.credentialHttpBasic``, user information in an input URL, or
a pre-signed URL's query string. The job table keeps each of them sealed (Fernet: AES-128-CBC with an
HMAC-SHA256, so a changed token is refused) under a key derived from ``BULKHEAD_IMPORT_SECRET_KEY``, which
every API and worker process of a deployment shares (``bulkhead serve`` makes one and keeps it in its data
directory). A server with no such key accepts no import that carries a secret: it would have to store it in
plaintext.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken

from core.errors import InvalidRequest

_CONTEXT = b"bulkhead import credentials v1\x00"


class Sealer:
    """Seals and opens import secrets with the deployment's key (or refuses to, without one)."""

    def __init__(self, key: str | None):
        self._fernet: Fernet | None = None
        if key:
            digest = hashlib.sha256(_CONTEXT + key.encode("utf-8")).digest()
            self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def seal(self, secret: str) -> str:
        """Return ``secret`` sealed; raise InvalidRequest when this server has no key."""
        if self._fernet is None:
            raise InvalidRequest(
                "This import carries credentials (credentialHttpBasic, a user in a URL or a signed query "
                "string) and this server keeps none: its operator sets BULKHEAD_IMPORT_SECRET_KEY"
            )
        return self._fernet.encrypt(secret.encode("utf-8")).decode("ascii")

    def open(self, sealed: str) -> str:
        """Return the secret of a sealed value; raise InvalidRequest when the key is not the one it was
        sealed with (the import then fails: its credentials cannot be recovered)."""
        if self._fernet is None:
            raise InvalidRequest(
                "This import's credentials are sealed and this server has no key to open them"
            )
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode("utf-8")
        except (InvalidToken, ValueError):
            raise InvalidRequest(
                "This import's credentials were sealed with another BULKHEAD_IMPORT_SECRET_KEY"
            ) from None


__all__ = ["Sealer"]
