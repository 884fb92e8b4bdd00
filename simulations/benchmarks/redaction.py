"""Redaction recall on a Faker corpus, and false positives on ordinary prose.

Faker (a well-kept generator of realistic PII for many locales) writes the
corpus: for each kind (emails, phones, cards, IBANs, national ids, credentials)
samples spread over ``LOCALES``, typed the ways people type them (upper and
lower case, full-width at signs, internationalized domains, cards with ``.``,
``_``, ``-`` or double-space separators, IBANs in groups or lower case, SSNs
without dashes), each inside a short sentence. A sample counts as caught when no
character of the value survives outside a placeholder (for credentials: the
secret itself is gone). Prose comes from Faker's word lists for several
languages with the numbers ordinary text carries (dates, times, prices,
versions, percentages, company names, cities); a sentence counts as a false
positive when redaction changes it at all.

The seed only makes the corpus repeatable: it is test data, it protects nothing.
"""

from __future__ import annotations

import argparse
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from faker import Faker

from client.recording.redact import CARD, EMAIL, IBAN, NATIONAL_ID, PHONE, SECRET, redact
from simulations.benchmarks import Measurement

LOCALES: tuple[str, ...] = (
    "en_US",
    "en_GB",
    "de_DE",
    "fr_FR",
    "es_ES",
    "it_IT",
    "nl_NL",
    "pl_PL",
    "sv_SE",
    "pt_BR",
    "ja_JP",
    "en_IN",
    "fi_FI",
    "en_CA",
    "cs_CZ",
    "pt_PT",
)
# Locales whose Faker ``ssn`` is a national id of their own (the rest fall back to en_US).
ID_LOCALES: tuple[str, ...] = (
    "en_US",
    "en_GB",
    "it_IT",
    "nl_NL",
    "pl_PL",
    "sv_SE",
    "pt_BR",
    "fi_FI",
    "en_CA",
    "fr_FR",
)
PROSE_LOCALES: tuple[str, ...] = ("en_US", "de_DE", "fr_FR", "it_IT", "es_ES", "nl_NL", "pl_PL")
KINDS: tuple[str, ...] = ("email", "phone", "card", "iban", "national_id", "credential")
RECALL_TARGET = 0.995
FALSE_POSITIVE_TARGET = 0.005
_PLACEHOLDERS = (EMAIL, PHONE, CARD, IBAN, NATIONAL_ID, SECRET)
_FRAMES: tuple[tuple[str, str], ...] = (
    ("", ""),
    ("my number is ", " thanks"),
    ("please use ", " for this"),
    ("Sent to ", "."),
    ("ok: ", "\n"),
    ("details ", ", see above"),
)
_IDN_DOMAINS = ("müller-bau.de", "bücher.example", "пример.рф", "例子.中国", "δοκιμή.gr", "café.fr")


@dataclass(frozen=True)
class Sample:
    """One sentence with PII: ``prefix + value + suffix``; ``secret`` must not survive."""

    kind: str
    prefix: str
    value: str
    suffix: str
    secret: str | None = None

    @property
    def text(self) -> str:
        """The sentence as typed."""
        return self.prefix + self.value + self.suffix


def caught(sample: Sample) -> bool:
    """Whether redaction left nothing of the value (or of its secret part)."""
    out = redact(sample.text)
    if sample.secret is not None:
        return sample.secret not in out
    if not (out.startswith(sample.prefix) and out.endswith(sample.suffix)):
        return False  # the frame changed: judge the whole sentence
    middle = out[len(sample.prefix) : len(out) - len(sample.suffix)]
    for placeholder in _PLACEHOLDERS:
        middle = middle.replace(placeholder, "")
    return not any(c.isalnum() for c in middle)


def _fakers(locales: tuple[str, ...], seed: int) -> list[Faker]:
    fakers = []
    for i, locale in enumerate(locales):
        fake = Faker(locale)
        fake.seed_instance(seed + i)
        fakers.append(fake)
    return fakers


def _email(fake: Faker, rng: random.Random) -> str:
    style = rng.random()
    if style < 0.15:
        local = re.sub(r"\W", "", fake.first_name().lower()) or "x"
        return f"{local}{rng.randint(1, 99)}@{rng.choice(_IDN_DOMAINS)}"
    email = str(fake.email())
    if style < 0.3:
        return email.replace("@", "\uff20")
    if style < 0.4:
        return email.upper()
    if style < 0.45:
        return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in email)
    return email


def _card(fake: Faker, rng: random.Random) -> str:
    digits = str(fake.credit_card_number())
    separator = rng.choice(("", " ", "-", ".", "_", "  "))
    groups = [digits[i : i + 4] for i in range(0, len(digits), 4)]
    return separator.join(groups)


def _iban(fake: Faker, rng: random.Random) -> str:
    iban = str(fake.iban())
    if rng.random() < 0.5:
        iban = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    return iban.lower() if rng.random() < 0.4 else iban


def _national_id(fake: Faker, rng: random.Random) -> str:
    ssn = str(fake.ssn())
    if re.fullmatch(r"\d{3}-\d{2}-\d{4}", ssn):
        return rng.choice((ssn, ssn.replace("-", ""), ssn.replace("-", " ")))
    return ssn.lower() if rng.random() < 0.2 else ssn


def _credential(fake: Faker, rng: random.Random) -> tuple[str, str]:
    user = re.sub(r"\W", "", str(fake.user_name())) or "admin"
    host = fake.domain_name()
    password = str(fake.password(length=rng.randint(8, 16)))
    plain = str(fake.password(length=rng.randint(10, 16), special_chars=False))
    token = rng.choice((fake.sha1(), fake.uuid4(), fake.pystr(min_chars=20, max_chars=32)))
    shapes: tuple[tuple[str, str], ...] = (
        (f"git clone https://{user}:{plain}@{host}/repo.git", plain),
        (f"mysql -u {user} -p{password} -h {host} app", password),
        (f"./deploy --password={password} --host {host}", password),
        (f"psql --password {password}", password),
        (f"curl -H 'Authorization: Bearer {token}' https://{host}/api", str(token)),
        (f"Authorization: Basic {plain}", plain),
        (f"https://{host}/cb?token={token}&next=1", str(token)),
        (f"export API_TOKEN={token}", str(token)),
        (f"PGPASSWORD={plain} pg_dump {user}", plain),
        (f"api_key: {token}", str(token)),
    )
    return rng.choice(shapes)


_MAKERS: dict[str, Callable[[Faker, random.Random], str]] = {
    "email": _email,
    "phone": lambda fake, rng: str(fake.phone_number()),
    "card": _card,
    "iban": _iban,
    "national_id": _national_id,
}


def corpus(
    kind: str, count: int, seed: int = 16, locales: tuple[str, ...] | None = None
) -> Iterator[Sample]:
    """``count`` samples of ``kind``, round-robin over the locales."""
    rng = random.Random(seed)  # repeatable test data, never a privacy seed
    if locales is None:
        locales = ID_LOCALES if kind == "national_id" else LOCALES
    fakers = _fakers(locales, seed)
    for i in range(count):
        fake = fakers[i % len(fakers)]
        prefix, suffix = rng.choice(_FRAMES)
        if kind == "credential":
            value, secret = _credential(fake, rng)
            yield Sample(kind, prefix, value, suffix, secret)
        else:
            yield Sample(kind, prefix, _MAKERS[kind](fake, rng), suffix)


def _ordinary_number(fake: Faker, rng: random.Random) -> str:
    makers: tuple[Callable[[], Any], ...] = (
        fake.year,
        fake.date,
        lambda: fake.date(pattern="%d.%m.%Y"),
        lambda: fake.date(pattern="%m/%d/%Y"),
        lambda: fake.time(pattern="%H:%M"),
        fake.pricetag,
        lambda: f"{rng.randint(1, 99)}%",
        lambda: f"v{rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 99)}",
        lambda: f"{rng.randint(2, 500)} items",
        lambda: f"page {rng.randint(1, 400)}",
        lambda: f"room {rng.randint(100, 999)}",
        fake.company,
        fake.city,
        fake.postcode,
        lambda: f"{rng.randint(1, 12)} x {rng.randint(1, 12)}",
        lambda: f"Q{rng.randint(1, 4)} {fake.year()}",
        lambda: f"ISO {rng.choice((9001, 27001, 8601))}",
        lambda: f"{rng.randint(1000, 99999):,}",
    )
    return str(rng.choice(makers)())


def prose(count: int, seed: int = 16, locales: tuple[str, ...] = PROSE_LOCALES) -> Iterator[str]:
    """Ordinary sentences in several languages, with ordinary numbers in about half."""
    rng = random.Random(seed)  # repeatable test data, never a privacy seed
    fakers = _fakers(locales, seed)
    for i in range(count):
        fake = fakers[i % len(fakers)]
        words = fake.words(nb=rng.randint(6, 16))
        if rng.random() < 0.6:
            words.insert(rng.randint(0, len(words)), _ordinary_number(fake, rng))
        yield " ".join(words).capitalize() + rng.choice((".", "!", "?", ""))


def run(quick: bool = False, per_kind: int = 10_000) -> list[Measurement]:
    """Recall per kind and the prose false-positive rate."""
    count = 500 if quick else per_kind
    results = []
    for kind in KINDS:
        started = time.perf_counter()
        samples = list(corpus(kind, count))
        hits = sum(caught(s) for s in samples)
        recall = hits / len(samples)
        locales = len(ID_LOCALES if kind == "national_id" else LOCALES)
        results.append(
            Measurement(
                "redaction",
                f"recall {kind}",
                100.0 * recall,
                "%",
                target=f">= {100 * RECALL_TARGET:.1f}",
                passed=recall >= RECALL_TARGET,
                note=f"{len(samples)} Faker samples over {locales} locales, "
                f"{time.perf_counter() - started:.1f}s",
            )
        )
    sentences = list(prose(count))
    changed = sum(redact(s) != s for s in sentences)
    rate = changed / len(sentences)
    results.append(
        Measurement(
            "redaction",
            "false positives on prose",
            100.0 * rate,
            "% of sentences",
            target=f"<= {100 * FALSE_POSITIVE_TARGET:.1f}",
            passed=rate <= FALSE_POSITIVE_TARGET,
            note=f"{len(sentences)} sentences in {len(PROSE_LOCALES)} languages",
        )
    )
    return results


def main(argv: list[str] | None = None) -> int:
    """Print the figures; ``--misses KIND`` shows what was not caught."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--misses", default="")
    args = parser.parse_args(argv)
    if args.misses == "prose":
        for s in prose(2000 if args.quick else 10_000):
            if redact(s) != s:
                print(repr(s), "->", repr(redact(s)))
        return 0
    if args.misses:
        for sample in corpus(args.misses, 2000 if args.quick else 10_000):
            if not caught(sample):
                print(repr(sample.text), "->", repr(redact(sample.text)))
        return 0
    for m in run(args.quick):
        print(f"{m.name}: {m.value:.2f} {m.unit} (target {m.target}) {m.note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
