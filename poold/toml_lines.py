"""Where each key of a TOML text is written: the line numbers behind the job file's errors
(``poold.jobspec``), found by a small walker over text tomllib has already accepted."""

from __future__ import annotations

import re
import tomllib

BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SCALAR = re.compile(r"[^,\]}\n#]*")  # a number, boolean or date: up to the next separator


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path in a TOML text to the line (1-based) where it is written.

    Tables, arrays of tables and array items get their index (``("resources", "accept", "1")``),
    so do items of inline arrays, also when they span lines; dotted keys, quoted keys, inline
    tables and multi-line strings are followed. Meant for text that tomllib has accepted: it
    points a person at a mistake and never raises.
    """
    scanner = _LineScanner(text)
    scanner.document()
    return scanner.lines


class _LineScanner:
    """A small TOML walker that notes where things are; tomllib has already checked the syntax."""

    def __init__(self, text: str):
        self.text = text
        self.pos = 0
        self.line = 1
        self.lines: dict[tuple[str, ...], int] = {}

    def document(self) -> None:
        table: tuple[str, ...] = ()
        array_counts: dict[tuple[str, ...], int] = {}
        while self._skip_blank(newlines=True):
            start = self.pos
            if self.text.startswith("[[", self.pos):
                self._advance(2)
                name = self._key()
                index = array_counts.get(name, -1) + 1
                array_counts[name] = index
                self.lines.setdefault(name, self.line)
                table = (*name, str(index))
                self.lines[table] = self.line
            elif self.text.startswith("[", self.pos):
                self._advance(1)
                table = self._key()
                self.lines.setdefault(table, self.line)
            else:
                self._key_value(table)
            self._skip_line()  # "]]", "]" or a comment after a header or a value
            if self.pos == start:
                self._advance(1)

    def _key_value(self, prefix: tuple[str, ...]) -> None:
        line = self.line
        key = self._key()
        for depth in range(1, len(key) + 1):
            self.lines.setdefault((*prefix, *key[:depth]), line)
        self._skip_blank(newlines=False)
        if self.text.startswith("=", self.pos):
            self._advance(1)
            self._skip_blank(newlines=False)
            self._value((*prefix, *key))

    def _key(self) -> tuple[str, ...]:
        parts: list[str] = []
        while True:
            self._skip_blank(newlines=False)
            char = self.text[self.pos : self.pos + 1]
            if char in ('"', "'"):
                start = self.pos
                self._string()
                try:
                    parts.append(tomllib.loads("k = " + self.text[start : self.pos])["k"])
                except tomllib.TOMLDecodeError:
                    parts.append(self.text[start + 1 : self.pos - 1])
            else:
                match = BARE_KEY.match(self.text, self.pos)
                if not match:
                    break
                parts.append(match.group())
                self._advance(match.end() - self.pos)
            self._skip_blank(newlines=False)
            if not self.text.startswith(".", self.pos):
                break
            self._advance(1)
        return tuple(parts)

    def _value(self, path: tuple[str, ...]) -> None:
        char = self.text[self.pos : self.pos + 1]
        if char in ("[", "{"):
            self._advance(1)
            closing, index = ("]", 0) if char == "[" else ("}", None)
            while self._skip_blank(newlines=True) and not self.text.startswith(closing, self.pos):
                start = self.pos
                if index is None:
                    self._key_value(path)
                else:
                    self.lines.setdefault((*path, str(index)), self.line)
                    self._value((*path, str(index)))
                    index += 1
                self._skip_blank(newlines=True)
                if self.text.startswith(",", self.pos):
                    self._advance(1)
                if self.pos == start:
                    self._advance(1)
            self._advance(1)
        elif char in ('"', "'"):
            self._string()
        else:
            self._advance(max(_SCALAR.match(self.text, self.pos).end() - self.pos, 1))

    def _string(self) -> None:
        quote = self.text[self.pos]
        delimiter = quote * 3 if self.text.startswith(quote * 3, self.pos) else quote
        self._advance(len(delimiter))
        while self.pos < len(self.text):
            if quote == '"' and self.text[self.pos] == "\\":
                self._advance(2)
            elif self.text.startswith(delimiter, self.pos):
                self._advance(len(delimiter))
                # A multi-line string may end with one or two quotes of its own: """a""""
                while len(delimiter) == 3 and self.text.startswith(quote, self.pos):
                    self._advance(1)
                return
            elif len(delimiter) == 1 and self.text[self.pos] == "\n":
                return
            else:
                self._advance(1)

    def _skip_blank(self, newlines: bool) -> bool:
        """Skip spaces, comments and (if asked) line ends; ``False`` at the end of the text."""
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "#":
                end = self.text.find("\n", self.pos)
                self._advance((len(self.text) if end == -1 else end) - self.pos)
            elif char in " \t\r" or (newlines and char == "\n"):
                self._advance(1)
            else:
                return True
        return False

    def _skip_line(self) -> None:
        end = self.text.find("\n", self.pos)
        self._advance((len(self.text) if end == -1 else end) - self.pos)

    def _advance(self, count: int) -> None:
        chunk = self.text[self.pos : self.pos + count]
        self.line += chunk.count("\n")
        self.pos += len(chunk)
