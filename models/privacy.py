"""Personal data redaction for logs, summaries and anything stored.

Finds, validates (checksums where the format has one) and masks:

* Kazakhstan IIN/BIN -- 12 digits with the official mod-11 check digit;
* payment card numbers -- 13-19 digits (spaces/dashes allowed), Luhn-valid;
* KZ IBANs -- ``KZ`` + 2 check digits + 16 characters, ISO 13616 mod-97 valid;
* phone numbers -- +7 / 8 / 7 followed by a 7xx (mobile) or 7xx/3xx area code and 7 digits,
  in the usual spacings (``+7 701 123 45 67``, ``8(727)2501234``, ``8-701-123-45-67``);
* e-mail addresses.

Numbers that fail their checksum (an order number, a sum of money) are kept.
"""

from __future__ import annotations

import logging
import re

IIN_WEIGHTS_1 = tuple(range(1, 12))
IIN_WEIGHTS_2 = (3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2)


def iin_valid(digits: str) -> bool:
    """The check digit of a 12-digit IIN or BIN."""
    if len(digits) != 12 or not digits.isdigit():
        return False
    d = [int(c) for c in digits]
    check = sum(a * b for a, b in zip(d[:11], IIN_WEIGHTS_1)) % 11
    if check == 10:
        check = sum(a * b for a, b in zip(d[:11], IIN_WEIGHTS_2)) % 11
        if check == 10:
            return False
    return check == d[11]


def luhn_valid(digits: str) -> bool:
    if not digits.isdigit() or not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, c in enumerate(reversed(digits)):
        n = int(c)
        if i % 2:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    s = iban.replace(" ", "").upper()
    if not re.fullmatch(r"KZ\d{2}[0-9A-Z]{16}", s):
        return False
    rearranged = s[4:] + s[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_IBAN = re.compile(r"\bKZ\d{2}(?:\s?[0-9A-Z]{4}){4}\b", re.I)
# digit runs with optional single spaces/dashes between groups
_DIGITS = re.compile(r"(?<![\w+])\+?\d[\d \-()]{9,26}\d(?!\w)")
_PHONE = re.compile(r"^(?:\+7|8|7)[ \-(]*([3-7]\d{2})[ \-)]*(\d{3})[ \-]*(\d{2})[ \-]*(\d{2})$")


def _classify(run: str) -> str | None:
    digits = re.sub(r"\D", "", run)
    if _PHONE.match(run.strip()) and len(digits) == 11:
        return "PHONE"
    if len(digits) == 12 and iin_valid(digits) and re.fullmatch(r"[\d ]+", run.strip()):
        return "IIN"
    if luhn_valid(digits) and re.fullmatch(r"[\d \-]+", run.strip()):
        return "CARD"
    return None


def redact(text: str) -> str:
    """``text`` with personal data replaced by ``[IIN]``, ``[CARD]``, ``[PHONE]``, ``[IBAN]``, ``[EMAIL]``."""
    if not text:
        return text
    text = _EMAIL.sub("[EMAIL]", text)
    text = _IBAN.sub(lambda m: "[IBAN]" if iban_valid(m.group(0)) else m.group(0), text)

    def digits(m: re.Match) -> str:
        run = m.group(0)
        kind = _classify(run)
        if kind:
            return f"[{kind}]"
        # a longer run may hold several numbers ("IIN 900101300123 and 8 701 ...")
        return run

    text = _DIGITS.sub(digits, text)
    # bare 12-digit IINs and 16-digit cards written without separators inside longer runs
    text = re.sub(r"(?<!\d)\d{12}(?!\d)", lambda m: "[IIN]" if iin_valid(m.group(0)) else m.group(0), text)
    text = re.sub(r"(?<!\d)\d{13,19}(?!\d)", lambda m: "[CARD]" if luhn_valid(m.group(0)) else m.group(0), text)
    return text


class RedactingFilter(logging.Filter):
    """Defence in depth: whatever reaches a log line passes through :func:`redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = redact(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True
