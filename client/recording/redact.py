"""PII redaction of typed text, run before a ``Text`` event is ever buffered.

Only used when the employee granted the ``text`` modality. Text is matched the
way people type it: each character is NFKC-normalized (full-width digits and
at signs become ASCII) and case-folded before any pattern runs, and the places
found are mapped back to the typed text, which keeps its own spelling elsewhere.
Each detector checks what it can (Luhn for cards, mod-97 for IBANs, the SSN
number ranges) so ordinary numbers, dates and versions survive; credentials in
URLs and command lines (``https://user:pw@host``, ``mysql -pSecret``,
``--password=``, ``token=``, ``Authorization:``) lose their value. What is found
becomes a placeholder such as ``[email]``; the original characters are dropped.

``find`` returns the spans, so the recorder can run the redactor over a rolling
window of typed text and seal only what lies safely before it (a card typed in
four groups with pauses between them is one match, not four harmless chunks).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

EMAIL: Final = "[email]"
PHONE: Final = "[phone]"
CARD: Final = "[card]"
IBAN: Final = "[iban]"
NATIONAL_ID: Final = "[id]"
SECRET: Final = "[secret]"  # noqa: S105 - a placeholder, not a secret

# Known token shapes: provider prefixes make these certain, whatever their entropy
# (matched case-sensitively, on the NFKC view).
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
# Credentials whose value follows a name (case-folded view); group 1 is the value.
_CREDENTIAL_PATTERNS: Final = (
    # scheme://user:password@host -> the whole user info
    re.compile(r"[a-z][a-z0-9+.-]*://([^\s/@:]+:[^\s/@]*)@"),
    # mysql -pSecret, mysqldump -u root -pSecret (a space after -p prompts instead)
    re.compile(
        r"\b(?:mysql|mysqldump|mysqladmin|mysqlimport|mysqlcheck|mariadb)\b[^\n]*?\s-p(\S+)"
    ),
    re.compile(r"\bsshpass\s+-p\s*(\S+)"),
    # --password=x, --password x, --token=x, --api-key x ...
    re.compile(
        r"--(?:password|passwd|pass|token|secret|api[-_]?key|access[-_]?key|client[-_]?secret"
        r"|auth[-_]?token)(?:=|\s+)(\S+)"
    ),
    # token=x, PGPASSWORD=x, api_key: x, password: x, "secret":"x"
    re.compile(
        r"[a-z0-9_]*(?:password|passwd|pwd|token|secret|api[-_]?key|apikey|access[-_]?key)"
        r"[\"']?\s*[=:]\s*[\"']?([^\s\"'&;,]+)"
    ),
    # Authorization: Bearer x / Basic x / x
    re.compile(r"\b(?:proxy-)?authorization\s*:\s*((?:(?:bearer|basic|token|digest)\s+)?\S+)"),
)
_EMAIL: Final = re.compile(r"[\w.%+'-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}")
_IBAN_CANDIDATE: Final = re.compile(r"(?<![a-z0-9])[a-z]{2}\d{2}(?:[ -]?[a-z0-9]){11,30}")
# ISO 13616 IBAN lengths by country: an IBAN typed in front of more words ends here.
_IBAN_LENGTHS: Final = {
    **dict.fromkeys(["no"], 15),
    **dict.fromkeys(["be"], 16),
    **dict.fromkeys(["dk", "fi", "fo", "gl", "nl"], 18),
    **dict.fromkeys(["mk", "si"], 19),
    **dict.fromkeys(["at", "ba", "ee", "kz", "lt", "lu", "xk"], 20),
    **dict.fromkeys(["ch", "hr", "li", "lv"], 21),
    **dict.fromkeys(["bg", "bh", "cr", "de", "ge", "gb", "ie", "me", "rs", "va"], 22),
    **dict.fromkeys(["ae", "gi", "il", "iq", "tl"], 23),
    **dict.fromkeys(["ad", "cz", "es", "md", "pk", "ro", "sa", "se", "sk", "tn", "vg"], 24),
    **dict.fromkeys(["pt", "st"], 25),
    **dict.fromkeys(["is", "tr"], 26),
    **dict.fromkeys(["fr", "gr", "it", "mc", "mr", "sm"], 27),
    **dict.fromkeys(["al", "az", "by", "cy", "do", "gt", "hu", "lb", "pl", "sv"], 28),
    **dict.fromkeys(["br", "eg", "ps", "qa", "ua"], 29),
    **dict.fromkeys(["jo", "kw", "mu"], 30),
    **dict.fromkeys(["mt", "sc"], 31),
    **dict.fromkeys(["lc"], 32),
}
_CARD_CANDIDATE: Final = re.compile(r"(?<![\d.,])\d(?:(?:[ ._-]| {2})?\d){11,18}(?!\d)")
_CARD_SEPARATOR: Final = re.compile(r"[ ._-]+")
_SSN: Final = re.compile(
    r"(?<![\d-])(?!000|666|9\d\d)\d{3}([- ]?)(?!00)\d{2}\1(?!0000)\d{4}(?![\d-])"
)
_UK_NINO: Final = re.compile(r"\b[a-ceghj-pr-tw-z][a-ceghj-npr-tw-z] ?\d{2} ?\d{2} ?\d{2} ?[a-z]\b")
_IT_CODICE_FISCALE: Final = re.compile(r"\b[a-z]{6}\d{2}[a-z]\d{2}[a-z]\d{3}[a-z]\b")
_NORDIC_ID: Final = re.compile(r"(?<![\d-])\d{6}[-+a]\d{3}[0-9a-z](?![\d-])")  # SE, FI
_FR_NIR: Final = re.compile(
    r"(?<!\w)[12] ?\d{2} ?\d{2} ?(?:\d{2}|2[ab]) ?\d{3} ?\d{3}(?: ?\d{2})?(?!\w)"
)
_ES_DNI: Final = re.compile(r"\b[xyz]?\d{7,8}-?[a-z]\b")
_PHONE_CANDIDATE: Final = re.compile(
    r"(?<![\w+.,/:])\+?\(?\+?\d[\d ().-]{5,}\d(?:\s?(?:x|ext\.?)\s?\d{1,6})?(?!\w|,\d)"
)
_EXTENSION: Final = re.compile(r"\s?(?:x|ext\.?)\s?\d{1,6}$")
_DATE_LIKE: Final = re.compile(r"^\d{1,4}([-./])\d{1,2}\1\d{1,4}$")
_DATE_INSIDE: Final = re.compile(r"(?:19|20)\d{2}-\d{2}-\d{2}|\d{1,2}[./]\d{1,2}[./](?:19|20)\d{2}")
_IP_LIKE: Final = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
_TOKEN: Final = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{24,}={0,2}")
# Bits per character above which a long mixed token is treated as a secret.
_ENTROPY_THRESHOLD: Final = 3.5
_MASK: Final = "\x00"  # stands for text already redacted: matches no pattern


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
    """ISO 13616 mod-97 check of an IBAN without spaces (either case)."""
    if not 15 <= len(compact) <= 34 or not compact.isascii() or not compact.isalnum():
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


@dataclass(frozen=True, slots=True)
class Span:
    """``text[start:end]`` is PII and becomes ``label``."""

    start: int
    end: int
    label: str


class _Views:
    """The typed text normalized for matching, one view character per origin index.

    ``cased`` is NFKC per character; ``folded`` is the same, case-folded where that
    keeps the length (so both views line up). Found places are masked in both
    views, so a later detector cannot match inside an earlier one's find.
    """

    def __init__(self, text: str) -> None:
        cased: list[str] = []
        folded: list[str] = []
        origin: list[int] = []
        for i, char in enumerate(text):
            norm = unicodedata.normalize("NFKC", char) if not char.isascii() else char
            for part in norm or char:
                low = part.casefold()
                cased.append(part)
                folded.append(low if len(low) == 1 else part.lower()[:1] or part)
                origin.append(i)
        self.cased = "".join(cased)
        self.folded = "".join(folded)
        self.origin = origin
        self.length = len(text)
        self.spans: list[Span] = []

    def add(self, start: int, end: int, label: str) -> None:
        """Take view range [start, end) as found, unless it overlaps an earlier find."""
        if start >= end or _MASK in self.folded[start:end]:
            return
        begin = self.origin[start]
        stop = self.origin[end - 1] + 1
        self.spans.append(Span(begin, stop, label))
        mask = _MASK * (end - start)
        self.cased = self.cased[:start] + mask + self.cased[end:]
        self.folded = self.folded[:start] + mask + self.folded[end:]


def _secrets(v: _Views) -> None:
    for pattern in _SECRET_PATTERNS:
        for m in list(pattern.finditer(v.cased)):
            v.add(m.start(), m.end(), SECRET)
    for pattern in _CREDENTIAL_PATTERNS:
        for m in list(pattern.finditer(v.folded)):
            v.add(m.start(1), m.end(1), SECRET)


def _emails(v: _Views) -> None:
    for m in list(_EMAIL.finditer(v.folded)):
        v.add(m.start(), m.end(), EMAIL)


def _ibans(v: _Views) -> None:
    for m in list(_IBAN_CANDIDATE.finditer(v.folded)):
        raw = m.group(0)
        positions = [i for i, c in enumerate(raw) if c not in " -"]
        compact = raw.replace(" ", "").replace("-", "")
        # Greedy matching may run into the next word: shrink until the checksum holds.
        known = _IBAN_LENGTHS.get(compact[:2])
        lengths = [*([known] if known else []), *range(len(compact), 14, -1)]
        for length in lengths:
            if length > len(compact):
                continue
            end = m.start() + positions[length - 1] + 1
            if end < len(v.folded) and v.folded[end].isalnum():
                continue  # ends inside a word: not where an IBAN ends
            if iban_valid(compact[:length]):
                v.add(m.start(), end, IBAN)
                break


def _cards(v: _Views) -> None:
    for m in list(_CARD_CANDIDATE.finditer(v.folded)):
        raw = m.group(0)
        # The whole run of digits, or it cut back at a separator (a date may follow).
        ends = [len(raw)] + [s.start() for s in reversed(list(_CARD_SEPARATOR.finditer(raw)))]
        for end in ends:
            digits = re.sub(r"\D", "", raw[:end])
            if (
                12 <= len(digits) <= 19
                and (digits[0] != "0" or digits.startswith("0604"))
                and luhn_valid(digits)
            ):
                v.add(m.start(), m.start() + end, CARD)
                break


def _national_ids(v: _Views) -> None:
    for pattern in (_SSN, _UK_NINO, _IT_CODICE_FISCALE, _NORDIC_ID, _FR_NIR, _ES_DNI):
        for m in list(pattern.finditer(v.folded)):
            v.add(m.start(), m.end(), NATIONAL_ID)


def _is_phone(candidate: str) -> bool:
    number = _EXTENSION.sub("", candidate)
    digits = sum(c.isdigit() for c in number)
    if _DATE_LIKE.match(number) or _IP_LIKE.match(number) or ".." in number:
        return False
    if _DATE_INSIDE.search(number):
        return False
    if number.lstrip("(").startswith("+"):
        return 7 <= digits <= 15
    if _SSN.fullmatch(number):
        return False  # a national id, labelled as one
    groups = len(re.findall(r"\d+", number))
    if number.startswith(("0", "(")) or groups >= 3:
        return 8 <= digits <= 15
    return 9 <= digits <= 15


def _phones(v: _Views, international: bool = False) -> None:
    for m in list(_PHONE_CANDIDATE.finditer(v.folded)):
        candidate = m.group(0).rstrip(" .-(")
        if international and not candidate.startswith(("+", "(")):
            continue
        if _is_phone(candidate):
            v.add(m.start(), m.start() + len(candidate), PHONE)


def _looks_secret(token: str) -> bool:
    has_digit = any(c.isdigit() for c in token)
    has_alpha = any(c.isalpha() for c in token)
    return has_digit and has_alpha and shannon_entropy(token) >= _ENTROPY_THRESHOLD


def _high_entropy(v: _Views) -> None:
    for m in list(_TOKEN.finditer(v.cased)):
        if _looks_secret(m.group(0)):
            v.add(m.start(), m.end(), SECRET)


# Order matters: certain shapes first, so a token's digits are not mistaken for a phone.
DETECTORS: Final[tuple[Callable[[_Views], None], ...]] = (
    _secrets,
    _emails,
    _ibans,
    _cards,
    lambda v: _phones(v, international=True),  # +39 075647378 is a phone, not an id
    _national_ids,
    _phones,
    _high_entropy,
)


def find(text: str) -> list[Span]:
    """Every piece of PII or secret in ``text``, as non-overlapping spans in order."""
    views = _Views(text)
    for detector in DETECTORS:
        detector(views)
    return sorted(views.spans, key=lambda s: s.start)


def apply(text: str, spans: list[Span]) -> str:
    """``text`` with each span replaced by its placeholder."""
    return "".join(_pieces(text, spans))


def _pieces(text: str, spans: list[Span]) -> Iterator[str]:
    at = 0
    for span in spans:
        yield text[at : span.start]
        yield span.label
        at = span.end
    yield text[at:]


def redact(text: str) -> str:
    """Replace every detected piece of PII or secret in ``text`` with a placeholder."""
    return apply(text, find(text))
