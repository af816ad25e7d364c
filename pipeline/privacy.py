"""Personal-data redaction, as the pipeline uses it (handoff summaries, log lines).

The code lives in :mod:`models.privacy`, at the bottom of the layers, so that a
model backend that sends caller text off the machine (the ``openai`` dialogue
backend) can redact it too.
"""

from models.privacy import RedactingFilter, iban_valid, iin_valid, luhn_valid, redact

__all__ = ["RedactingFilter", "iban_valid", "iin_valid", "luhn_valid", "redact"]
