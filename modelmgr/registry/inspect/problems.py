"""How the header parsers report trouble: one-line BadFileErrors, and a request for more bytes.

Header bytes are untrusted: tensor names and metadata keys can hold newlines, terminal escapes or
megabytes of text. Everything quoted in a message passes :func:`shown`, so an error stays a single
readable line whatever the file contains.
"""

from __future__ import annotations

from ...errors import BadFileError

_SHOWN_MAX = 80


class NeedMore(Exception):
    """The header continues past the bytes given; the file layer reads up to ``end`` and retries.

    Raised only when the file is known to hold ``end`` bytes and ``end`` is within the parser's
    header limit, so honouring it can never mean reading tensor data at large or past the file.
    Internal to this package: the public functions never let it escape.
    """

    def __init__(self, end: int) -> None:
        super().__init__(end)
        self.end = end


def shown(value: object, limit: int = _SHOWN_MAX) -> str:
    """``value`` for a one-line message: strings quoted, control characters escaped, long text cut."""
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"'{text}'" if isinstance(value, str) else text


def bad(name: str, what: str, hint: str | None = None) -> BadFileError:
    """A BadFileError whose message is ``<file name>: <what is wrong>`` on one line."""
    message = f"{name}: {what}".replace("\n", " ").replace("\r", " ")
    return BadFileError(message, hint)
