"""User-facing errors. The CLI prints them as one line and exits with status 2."""


class GantoolError(Exception):
    """A problem the user can fix (bad recipe, missing data, unknown name): exit status 2."""

    exit_code = 2


class ParamError(GantoolError):
    """A component rejected one of its parameters; the recipe loader adds file and table."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


class RunFailed(Exception):
    """Training started but could not finish (exit status 1)."""

    exit_code = 1


MAX_MESSAGE = 500  # characters of one printed error line

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def first_line(e: BaseException) -> str:
    """``"Type: first line of the message"`` (at most 200 characters of it): an exception in one line."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def one_line(text, limit: int = MAX_MESSAGE) -> str:
    """``text`` safe to print as one terminal line: control characters escaped (a path may hold
    an escape sequence or a newline) and at most ``limit`` characters (a path may be megabytes long)."""
    text, out, length = str(text), [], 0
    for i, ch in enumerate(text):
        piece = _escape(ch)
        if length + len(piece) > limit:
            return "".join(out) + f"… ({len(text) - i} more characters)"
        out.append(piece)
        length += len(piece)
    return "".join(out)


def _escape(ch: str) -> str:
    import unicodedata

    if ch in _ESCAPES:
        return _ESCAPES[ch]
    if ch in _BIDI or unicodedata.category(ch) in ("Cc", "Cs"):  # controls, lone surrogates, text reversal
        return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"
    return ch
