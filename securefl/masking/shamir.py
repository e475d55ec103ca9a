"""Shamir secret sharing of 32-byte secrets over GF(2^521 - 1).

Any `threshold` shares reconstruct the secret; fewer reveal nothing about it (every secret is
equally likely given threshold-1 shares). Shares are evaluations at x = 1, 2, … (a client's
position in the round's participant list, plus one). Coefficients come from `secrets`."""

from __future__ import annotations

import secrets

PRIME = 2**521 - 1  # a Mersenne prime, larger than any 32-byte secret
SHARE_BYTES = 66


def split(secret: bytes, xs: list[int], threshold: int) -> dict[int, bytes]:
    """Shares of `secret` at the points `xs`; any `threshold` of them reconstruct it."""
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold {threshold} must be between 1 and the {len(xs)} shares")
    if len(set(xs)) != len(xs) or min(xs) < 1:
        raise ValueError("share points must be distinct positive integers")
    coefficients = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares = {}
    for x in xs:
        value = 0
        for coefficient in reversed(coefficients):  # Horner
            value = (value * x + coefficient) % PRIME
        shares[x] = value.to_bytes(SHARE_BYTES, "big")
    return shares


def combine(shares: dict[int, bytes], threshold: int, secret_bytes: int = 32) -> bytes:
    """Lagrange interpolation at 0 from `threshold` shares."""
    if len(shares) < threshold:
        raise ValueError(f"{len(shares)} shares cannot reconstruct a secret with threshold {threshold}")
    points = list(shares.items())[:threshold]
    secret = 0
    for i, (x_i, share) in enumerate(points):
        numerator, denominator = 1, 1
        for j, (x_j, _) in enumerate(points):
            if i != j:
                numerator = numerator * (-x_j) % PRIME
                denominator = denominator * (x_i - x_j) % PRIME
        secret = (secret + int.from_bytes(share, "big") * numerator * pow(denominator, -1, PRIME)) % PRIME
    if secret >= 1 << (8 * secret_bytes):
        raise ValueError("shares are inconsistent: the result is not a secret of this size")
    return secret.to_bytes(secret_bytes, "big")
