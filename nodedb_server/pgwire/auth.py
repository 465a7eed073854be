"""Server side of SASL SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it.

No channel binding: the server offers only ``SCRAM-SHA-256`` (not
``-PLUS``) while TLS is not served, and accepts the gs2 header ``n,,`` or
``y,,``. A run of the exchange is a small object fed the client's messages.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from nodedb_server.tenants.users import ScramVerifier

MECHANISM = "SCRAM-SHA-256"


class ScramError(Exception):
    """The client's SASL message is malformed (08P01) or its proof is wrong (28P01)."""

    def __init__(self, message: str, bad_password: bool = False):
        super().__init__(message)
        self.bad_password = bad_password


def _attrs(msg: str) -> dict[str, str]:
    out = {}
    for part in msg.split(","):
        if len(part) < 2 or part[1] != "=":
            raise ScramError("malformed SCRAM attribute")
        out[part[0]] = part[2:]
    return out


class ScramExchange:
    def __init__(self, verifier: ScramVerifier):
        self._v = verifier
        self._nonce = ""
        self._client_first_bare = ""
        self._server_first = ""

    def server_first(self, client_first: bytes) -> bytes:
        try:
            text = client_first.decode("utf-8")
        except UnicodeDecodeError:
            raise ScramError("SCRAM message is not UTF-8") from None
        if not (text.startswith("n,") or text.startswith("y,")):
            raise ScramError("channel binding is not supported by this server")
        parts = text.split(",", 2)
        if len(parts) != 3:
            raise ScramError("malformed SCRAM client-first-message")
        self._client_first_bare = parts[2]
        attrs = _attrs(self._client_first_bare)
        client_nonce = attrs.get("r")
        if not client_nonce:
            raise ScramError("SCRAM client-first-message has no nonce")
        self._nonce = client_nonce + base64.b64encode(secrets.token_bytes(18)).decode()
        salt = base64.b64encode(self._v.salt).decode()
        self._server_first = f"r={self._nonce},s={salt},i={self._v.iterations}"
        return self._server_first.encode()

    def server_final(self, client_final: bytes) -> bytes:
        try:
            text = client_final.decode("utf-8")
        except UnicodeDecodeError:
            raise ScramError("SCRAM message is not UTF-8") from None
        without_proof, sep, proof_part = text.rpartition(",p=")
        if not sep:
            raise ScramError("SCRAM client-final-message has no proof")
        attrs = _attrs(without_proof)
        if attrs.get("r") != self._nonce:
            raise ScramError("SCRAM nonce mismatch")
        try:
            proof = base64.b64decode(proof_part, validate=True)
        except ValueError:
            raise ScramError("SCRAM proof is not base64") from None
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        client_sig = hmac.new(self._v.stored_key, auth_message, hashlib.sha256).digest()
        if len(proof) != len(client_sig):
            raise ScramError("password authentication failed", bad_password=True)
        client_key = bytes(a ^ b for a, b in zip(proof, client_sig, strict=True))
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), self._v.stored_key):
            raise ScramError("password authentication failed", bad_password=True)
        server_sig = hmac.new(self._v.server_key, auth_message, hashlib.sha256).digest()
        return b"v=" + base64.b64encode(server_sig)
