"""PII redaction of typed text, run before a ``Text`` event is ever buffered.

Only used when the employee granted the ``text`` modality. Each detector is
small and checks what it can (Luhn for cards, mod-97 for IBANs, the SSN number
ranges) so ordinary numbers, dates and versions survive. What is found becomes a
placeholder such as ``[email]``; the original characters are dropped.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from typing import Final

EMAIL: Final = "[email]"
PHONE: Final = "[phone]"
CARD: Final = "[card]"
IBAN: Final = "[iban]"
NATIONAL_ID: Final = "[id]"
SECRET: Final = "[secret]"  # noqa: S105 - a placeholder, not a secret

# Known token shapes: provider prefixes make these certain, whatever their entropy.
_SECRET_PATTERNS: Final = (
    re.compile(
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.S
    ),
    re.compile(r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{16,}"),  # OpenAI / Anthropic style
    re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}"),  # GitHub tokens
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key ids
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),  # Slack tokens
    re.compile(r"\bAIza[0-9A-Za-z_-]{35}"),  # Google API keys
    re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}"),  # GitLab tokens
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),  # JWTs
)
_EMAIL: Final = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_IBAN_CANDIDATE: Final = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}")
_CARD_CANDIDATE: Final = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_SSN: Final = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")
_UK_NINO: Final = re.compile(r"\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")
_PHONE_CANDIDATE: Final = re.compile(r"(?<![\w+])\+?\(?\d[\d ().-]{6,}\d(?![\w])")
_DATE_LIKE: Final = re.compile(r"^\d{1,4}([-./])\d{1,2}\1\d{1,4}$")
_IP_LIKE: Final = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
_TOKEN: Final = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{24,}={0,2}")
# Bits per character above which a long mixed token is treated as a secret.
_ENTROPY_THRESHOLD: Final = 3.5


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies."""
    if not digits.isdigit():
        return False
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = int(char)
        if i % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(compact: str) -> bool:
    """ISO 13616 mod-97 check of an IBAN without spaces."""
    if not 15 <= len(compact) <= 34 or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in rearranged.upper())
    return int(number) % 97 == 1


def shannon_entropy(text: str) -> float:
    """Bits per character of ``text``'s own character distribution."""
    if not text:
        return 0.0
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _sub_ibans(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        raw = match.group(0)
        positions = [i for i, c in enumerate(raw) if c != " "]
        compact = raw.replace(" ", "")
        # Greedy matching may run into the next word: shrink until the checksum holds.
        for length in range(len(compact), 14, -1):
            if iban_valid(compact[:length]):
                return IBAN + raw[positions[length - 1] + 1 :]
        return raw

    return _IBAN_CANDIDATE.sub(replace, text)


def _sub_cards(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        digits = re.sub(r"[ -]", "", match.group(0))
        return CARD if 13 <= len(digits) <= 19 and luhn_valid(digits) else match.group(0)

    return _CARD_CANDIDATE.sub(replace, text)


def _is_phone(candidate: str) -> bool:
    digits = sum(c.isdigit() for c in candidate)
    if _DATE_LIKE.match(candidate) or _IP_LIKE.match(candidate) or ".." in candidate:
        return False
    if candidate.startswith("+"):
        return 8 <= digits <= 15
    return 10 <= digits <= 15


def _sub_phones(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        candidate = match.group(0).rstrip(" .-")
        tail = match.group(0)[len(candidate) :]
        return PHONE + tail if _is_phone(candidate) else match.group(0)

    return _PHONE_CANDIDATE.sub(replace, text)


def _looks_secret(token: str) -> bool:
    has_digit = any(c.isdigit() for c in token)
    has_alpha = any(c.isalpha() for c in token)
    return has_digit and has_alpha and shannon_entropy(token) >= _ENTROPY_THRESHOLD


def _sub_high_entropy(text: str) -> str:
    return _TOKEN.sub(lambda m: SECRET if _looks_secret(m.group(0)) else m.group(0), text)


def _sub_secrets(text: str) -> str:
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(SECRET, text)
    return text


# Order matters: certain shapes first, so a token's digits are not mistaken for a phone.
REDACTORS: Final[tuple[Callable[[str], str], ...]] = (
    _sub_secrets,
    lambda t: _EMAIL.sub(EMAIL, t),
    _sub_ibans,
    _sub_cards,
    lambda t: _SSN.sub(NATIONAL_ID, t),
    lambda t: _UK_NINO.sub(NATIONAL_ID, t),
    _sub_phones,
    _sub_high_entropy,
)


def redact(text: str) -> str:
    """Replace every detected piece of PII or secret in ``text`` with a placeholder."""
    for redactor in REDACTORS:
        text = redactor(text)
    return text
