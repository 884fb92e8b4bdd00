"""PII redaction: each detector catches its shape, and ordinary text survives."""

from __future__ import annotations

import pytest

from client.recording.redact import iban_valid, luhn_valid, redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail jane.doe+work@example.co.uk now", "mail [email] now"),
        ("a@b.io", "[email]"),
    ],
)
def test_emails_are_redacted(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "phone",
    ["+1 415 555 2671", "+44 20 7946 0958", "(415) 555-2671", "415.555.2671", "+4915123456789"],
)
def test_phone_numbers_are_redacted(phone: str) -> None:
    assert redact(f"call {phone} today") == "call [phone] today"


def test_card_numbers_pass_luhn_and_are_redacted() -> None:
    assert luhn_valid("4111111111111111")
    assert redact("card 4111 1111 1111 1111 exp") == "card [card] exp"
    assert redact("card 5500-0000-0000-0004") == "card [card]"


def test_a_sixteen_digit_number_failing_luhn_is_not_a_card() -> None:
    assert not luhn_valid("4111111111111112")
    assert "[card]" not in redact("order 4111111111111112")


def test_ibans_pass_mod_97_and_are_redacted() -> None:
    assert iban_valid("DE89370400440532013000")
    assert redact("pay DE89 3704 0044 0532 0130 00 please") == "pay [iban] please"
    assert redact("GB82WEST12345698765432 OK") == "[iban] OK"


def test_an_iban_shape_failing_mod_97_is_left_alone() -> None:
    assert redact("DE00370400440532013000") == "DE00370400440532013000"


def test_us_social_security_numbers_are_redacted() -> None:
    assert redact("ssn 123-45-6789.") == "ssn [id]."
    assert redact("not 000-12-3456") == "not 000-12-3456"  # never issued


def test_uk_national_insurance_numbers_are_redacted() -> None:
    assert redact("NI AB 12 34 56 C") == "NI [id]"


@pytest.mark.parametrize(
    "secret",
    [
        "sk-proj-Abc123def456GHI789jkl012",
        "ghp_0123456789abcdefghijABCDEFGHIJ012345",
        "AKIAIOSFODNN7EXAMPLE",
        "xoxb-123456789012-abcdefABCDEF",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "q8Zr2Lm5Xv9Tb4Nw7Kp1Hs6Jd3Fg0Yc",  # generic high-entropy string
    ],
)
def test_api_keys_and_tokens_are_redacted(secret: str) -> None:
    assert redact(f"key={secret} end") == "key=[secret] end"


def test_a_private_key_block_is_redacted() -> None:
    block = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----"
    assert redact(f"x {block} y") == "x [secret] y"


@pytest.mark.parametrize(
    "text",
    [
        "Meeting moved to 2024-01-15 at 14:30, room 4.12",
        "bump version to 1.41.0 and torch 2.13.0",
        "it costs $1,299.00 for 3 seats",
        "ticket HEARTH-1234 is done; see PR #567",
        "server 192.168.100.200 answered in 35 ms",
        "internationalization_and_localization_settings",
        "The quick brown fox jumps over the lazy dog 42 times.",
        "order number 12345678",
    ],
)
def test_ordinary_text_is_not_over_redacted(text: str) -> None:
    assert redact(text) == text


def _wide(text: str) -> str:
    """Full-width forms, as CJK input methods type them."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # cards with the separators people use
        ("card 4111.1111.1111.1111 ok", "card [card] ok"),
        ("card 4111_1111_1111_1111 ok", "card [card] ok"),
        ("card 4111  1111  1111  1111 ok", "card [card] ok"),
        (f"card {_wide('4111 1111 1111 1111')}", "card [card]"),  # full-width digits
        ("card 4111 1111 1111 1111 12/27", "card [card] 12/27"),  # the expiry survives
        # IBANs in lower case
        ("iban de89 3704 0044 0532 0130 00 thanks", "iban [iban] thanks"),
        ("gb82west12345698765432", "[iban]"),
        # internationalized and full-width emails
        ("to jörg.müller@bücher.de now", "to [email] now"),
        ("to 用户@例子.中国 now", "to [email] now"),
        ("to jane\uff20example.com now", "to [email] now"),
        ("to JANE.DOE@EXAMPLE.COM now", "to [email] now"),
        # SSNs without dashes
        ("ssn 123456789 on file", "ssn [id] on file"),
        ("ssn 123 45 6789 on file", "ssn [id] on file"),
        # credentials in URLs and command lines
        (
            "git clone https://bob:hunter2@git.example.com/x.git",
            "git clone https://[secret]@git.example.com/x.git",
        ),
        ("mysql -u root -pSecret123 app", "mysql -u root -p[secret] app"),
        ("deploy --password=Tr0ub4dor&3 --fast", "deploy --password=[secret] --fast"),
        ("https://x.io/cb?token=abc123&next=1", "https://x.io/cb?token=[secret]&next=1"),
        ("export GITHUB_TOKEN=abc", "export GITHUB_TOKEN=[secret]"),
        ("Authorization: Bearer abc.def.ghi", "Authorization: [secret]"),
        ("authorization: basic dXNlcjpwYXNz", "authorization: [secret]"),
    ],
)
def test_what_people_actually_type_is_redacted(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_the_typed_text_keeps_its_own_spelling_around_a_find() -> None:
    # Matching runs on NFKC + case-folded text; what is not PII is stored as typed.
    typed = f"{_wide('R')}éunion: {_wide('ABC')} mail Jane\uff20Example.com"
    assert redact(typed) == f"{_wide('R')}éunion: {_wide('ABC')} mail [email]"


def test_a_small_faker_sample_of_every_kind_is_caught() -> None:
    from simulations.benchmarks.redaction import KINDS, caught, corpus, prose  # noqa: PLC0415

    # The benchmark (make bench) runs 10,000 per kind over 16 locales; this is a taste.
    locales = ("en_US", "en_GB", "fr_FR")
    for kind in KINDS:
        missed = [s.text for s in corpus(kind, 30, locales=locales) if not caught(s)]
        assert not missed, (kind, missed)
    assert [s for s in prose(60, locales=locales) if redact(s) != s] == []
