"""Stage errors with stable, snake_case codes (sent to clients as `error` events)."""


class DauysError(Exception):
    code = "internal_error"

    def __init__(self, code: str | None = None, message: str = "") -> None:
        super().__init__(message)
        if code:
            self.code = code
        self.message = message


class ProtocolError(DauysError):
    """The client sent something the protocol does not allow."""

    code = "invalid_message"


# Every code the server may send, documented in PROTOCOL.md.
ERROR_CODES = {
    "invalid_json": "a text frame that is not a JSON object",
    "invalid_message": "a known message with missing or mistyped fields",
    "unknown_type": "a message type the server does not know",
    "audio_before_start": "a binary frame before a valid start",
    "text_before_start": "a text message before a valid start",
    "already_started": "a second start in one session",
    "unsupported_encoding": "audio or output encoding not pcm_s16le or mulaw",
    "unsupported_sample_rate": "sample rate outside 8000..48000",
    "unsupported_channels": "channels not 1 or 2",
    "unsupported_language": "a language that is not configured",
    "frame_too_large": "a frame above server.max_frame_bytes (then close 1009)",
    "text_too_long": "typed text above server.max_text_chars",
    "session_too_long": "the session reached server.max_session_s",
    "start_timeout": "no valid start within server.start_timeout_s of connecting (then close 1008)",
    "asr_failed": "recognition of one utterance failed on the server",
    "internal_error": "a server fault (then close 1011)",
    "slow_consumer": "the client read none of its output for server.send_timeout_s (then close 1008)",
}
