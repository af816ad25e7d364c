"""Personal data redaction: what must be masked, and what must not."""

import logging
import re

import pytest

from pipeline.privacy import RedactingFilter, iban_valid, iin_valid, luhn_valid, redact

VALID_IIN = "900101300126"  # check digit computed with the official mod-11 weights
VALID_BIN = "040340001283"
VALID_CARD = "4400 4301 2345 6789"
VALID_IBAN = "KZ86125KZT5004100100"


def test_iin_checksum():
    assert iin_valid(VALID_IIN) and iin_valid(VALID_BIN)
    assert not iin_valid("900101300123")  # wrong check digit
    assert not iin_valid("90010130012")  # 11 digits
    # the second weight set is used when the first gives 10
    digits = next(f"{n:011d}" for n in range(10**10, 10**10 + 5000) if sum(int(c) * w for c, w in zip(f"{n:011d}", range(1, 12))) % 11 == 10)
    second = sum(int(c) * w for c, w in zip(digits, (3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2))) % 11
    if second != 10:
        assert iin_valid(digits + str(second))


def test_luhn_and_iban():
    assert luhn_valid("4400430123456789") and not luhn_valid("4400430123456788")
    assert iban_valid(VALID_IBAN) and iban_valid("KZ86 125K ZT50 0410 0100")
    assert not iban_valid("KZ87125KZT5004100100")


@pytest.mark.parametrize(
    "text, tag",
    [
        (f"Менің ЖСН {VALID_IIN}", "[IIN]"),
        (f"БИН компании {VALID_BIN}.", "[IIN]"),
        (f"карта {VALID_CARD}", "[CARD]"),
        ("карта 4400-4301-2345-6789", "[CARD]"),
        ("card 4400430123456789", "[CARD]"),
        ("позвоните +7 701 123 45 67", "[PHONE]"),
        ("номер 8 (727) 250-12-34", "[PHONE]"),
        ("8-701-123-45-67 нөміріме хабарласыңыз", "[PHONE]"),
        ("87011234567", "[PHONE]"),
        (f"шот {VALID_IBAN}", "[IBAN]"),
        ("KZ86 125K ZT50 0410 0100 шотына", "[IBAN]"),
        ("пошта: aigerim.n@mail.kz", "[EMAIL]"),
    ],
)
def test_personal_data_is_masked(text, tag):
    out = redact(text)
    assert tag in out
    assert not re.search(r"\d{4}", re.sub(r"[ \-()]", "", out)), out  # no digits of it remain
    assert "@" not in out


@pytest.mark.parametrize(
    "text",
    [
        "Заказ 900101300123 не найден",  # 12 digits, bad IIN check digit
        "сумма 150000 тенге",
        "номер операции 4400430123456788",  # fails Luhn
        "курс 1 доллар = 470.5 тенге, 2026 жыл",
        "Филиал работает с 9:00 до 18:00",
        "KZ87125KZT5004100100",  # bad IBAN check
        "кодовое слово 12345",
    ],
)
def test_non_personal_numbers_are_kept(text):
    assert redact(text) == text


def test_log_filter_redacts_formatted_messages(caplog):
    logger = logging.getLogger("dauys.test.privacy")
    handler = logging.Handler()
    records = []
    handler.emit = records.append
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    try:
        logger.warning("caller said %s and %s", VALID_IIN, VALID_CARD)
    finally:
        logger.removeHandler(handler)
    msg = records[0].getMessage()
    assert VALID_IIN not in msg and "4301" not in msg and "[IIN]" in msg and "[CARD]" in msg
