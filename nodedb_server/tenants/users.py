"""Users are stored only as SCRAM-SHA-256 verifiers (RFC 5802 / RFC 7677).

Verifier text, as PostgreSQL writes it in pg_authid:
``SCRAM-SHA-256$<iterations>:<salt b64>$<StoredKey b64>:<ServerKey b64>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

# PostgreSQL's default scram_iterations.
SCRAM_ITERATIONS = 4096


@dataclass(frozen=True)
class ScramVerifier:
    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes

    def encode(self) -> str:
        b = base64.b64encode
        return (
            f"SCRAM-SHA-256${self.iterations}:{b(self.salt).decode()}$"
            f"{b(self.stored_key).decode()}:{b(self.server_key).decode()}"
        )

    @classmethod
    def decode(cls, text: str) -> ScramVerifier:
        scheme, params, keys = text.split("$")
        if scheme != "SCRAM-SHA-256":
            raise ValueError("not a SCRAM-SHA-256 verifier")
        iters, salt = params.split(":")
        stored, server = keys.split(":")
        d = base64.b64decode
        return cls(int(iters), d(salt), d(stored), d(server))


def make_verifier(
    password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS
) -> ScramVerifier:
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return ScramVerifier(iterations, salt, stored_key, server_key)
