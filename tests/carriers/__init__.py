"""Each carrier's tests together: codecs (no socket), the call runner, Twilio signatures, phone calls end to end."""
