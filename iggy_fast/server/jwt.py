"""Access tokens of the HTTP API: JSON Web Tokens issued at login, checked on every request.

Issued by `POST /users/login` and `POST /personal-access-tokens/login` (after the same
password or token check as a binary login), renewed by `POST /users/refresh-token`, revoked by
`DELETE /users/logout`. Claims as Iggy issues them: `jti` (random), `sub` (the user id), `iss`,
`aud`, `iat`, `nbf` (iat + not_before), `exp` (iat + access_token_expiry), plus `uca`, the
user's creation time (user ids are reused after a delete, and a token must never act as a later
user who got its owner's id), and `pwd`, a keyed digest of the user's password hash: a changed
password ends the user's tokens, as it ends the user's binary sessions. Signed with HMAC
(HS256/384/512) by `[http.jwt] encoding_secret`; an empty secret is 32 random bytes per start,
so tokens do not survive a restart.

A token is checked for signature, issuer, audience and times (with `clock_skew` leeway) once,
then remembered until it expires (a repeat is a dict lookup), and every time against the
revocation set: a logged-out token's `jti` is kept there until the token would
have expired anyway, then forgotten (`forget_expired`, a periodic task). Any failure is
Unauthenticated (40, HTTP 401). Tokens are for HTTP only: the binary login takes passwords
and personal access tokens, never a JWT.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import time

import jwt as pyjwt

from iggy_fast.config import ConfigError, parse_duration_us
from iggy_fast.protocol.errors import Unauthenticated

ALGORITHMS = ("HS256", "HS384", "HS512")
NEVER_SECONDS = 1_000_000_000       # a "never" expiry: ~31 years, as Iggy issues it
MAX_VERIFIED = 10_000               # checked tokens remembered (all forgotten when full)


def _seconds(value, key: str) -> int:
    try:
        us = parse_duration_us(value)
    except ValueError:
        raise ConfigError(f"http.jwt.{key}: not a duration: {value!r}") from None
    return NEVER_SECONDS if us >= 2**64 - 1 else us // 1_000_000


def as_list(value) -> list[str]:
    """A TOML array, or a comma-separated string from an IGGY_* variable."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return list(value)


class JwtManager:
    """Issues and checks the access tokens of one server run (see the module docstring)."""

    def __init__(self, cfg: dict):
        self.algorithm = cfg["algorithm"]
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"http.jwt.algorithm {self.algorithm!r}: use one of "
                              f"{', '.join(ALGORITHMS)}")
        self.encoding_key = self._secret(cfg, "encoding_secret")
        self.decoding_key = self._secret(cfg, "decoding_secret") or self.encoding_key
        if not self.encoding_key:
            self.encoding_key = self.decoding_key = secrets.token_bytes(32)
        self.issuer = cfg["issuer"]
        self.audience = cfg["audience"]
        self.valid_issuers = as_list(cfg["valid_issuers"]) or [self.issuer]
        self.valid_audiences = as_list(cfg["valid_audiences"]) or [self.audience]
        self.expiry = _seconds(cfg["access_token_expiry"], "access_token_expiry")
        self.leeway = _seconds(cfg["clock_skew"], "clock_skew")
        self.not_before = _seconds(cfg["not_before"], "not_before")
        self.revoked: dict[str, int] = {}       # jti -> exp (unix seconds)
        # Tokens whose signature and claims were checked once: a repeat costs a dict lookup
        # and a time comparison instead of ~0.1 ms of HMAC and claim checks.
        self.verified: dict[str, dict] = {}

    @staticmethod
    def _secret(cfg: dict, key: str) -> bytes:
        text = cfg[key]
        if not text:
            return b""
        if cfg["use_base64_secret"]:
            try:
                return base64.b64decode(text, validate=True)
            except ValueError:
                raise ConfigError(f"http.jwt.{key} is not valid base64") from None
        return text.encode()

    def issue(self, user, now_s: int) -> tuple[str, int]:
        """(token, expiry in unix seconds) for `user` (a model object: id, created_at)."""
        exp = now_s + self.expiry
        claims = {"jti": secrets.token_hex(16), "sub": str(user.id), "uca": user.created_at,
                  "pwd": self.password_tag(user), "iss": self.issuer, "aud": self.audience,
                  "iat": now_s, "nbf": now_s + self.not_before, "exp": exp}
        return pyjwt.encode(claims, self.encoding_key, algorithm=self.algorithm), exp

    def password_tag(self, user) -> str:
        """Which password the token was issued under (HMAC: the hash itself is not shown)."""
        return hmac.new(self.encoding_key, user.password_hash.encode(), "sha256").hexdigest()[:16]

    def check(self, token: str) -> dict:
        """The claims of a valid, unrevoked token; Unauthenticated otherwise."""
        claims = self.verified.get(token)
        if claims is not None and claims["exp"] + self.leeway >= time.time():
            if claims["jti"] in self.revoked:
                raise Unauthenticated("the access token was revoked (logged out)")
            return claims
        claims = self._verify(token)
        if len(self.verified) >= MAX_VERIFIED:
            self.verified.clear()
        self.verified[token] = claims
        return claims

    def _verify(self, token: str) -> dict:
        try:
            claims = pyjwt.decode(token, self.decoding_key, algorithms=[self.algorithm],
                                  audience=self.valid_audiences, issuer=self.valid_issuers,
                                  leeway=self.leeway,
                                  options={"require": ["exp", "sub", "jti", "nbf"]})
        except pyjwt.PyJWTError as e:
            raise Unauthenticated(f"invalid access token: {e}") from None
        if claims["jti"] in self.revoked:
            raise Unauthenticated("the access token was revoked (logged out)")
        if not str(claims["sub"]).isdigit():
            raise Unauthenticated("invalid access token: bad subject")
        return claims

    def revoke(self, claims: dict) -> None:
        self.revoked[claims["jti"]] = int(claims["exp"])

    def forget_expired(self, now_us: int) -> None:
        """Drop revocations of tokens that have expired anyway (with the leeway)."""
        cutoff = now_us // 1_000_000 - self.leeway
        for jti in [j for j, exp in self.revoked.items() if exp < cutoff]:
            del self.revoked[jti]
        for token in [t for t, claims in self.verified.items() if claims["exp"] < cutoff]:
            del self.verified[token]
