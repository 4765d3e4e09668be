"""The checks on text that both sets of limits share, each written once: what is not text, and how deep JSON
text nests, found without parsing it.

core/body_limits.py (what a client sends in a request body) and core/limits.py (what an uploaded data file
decodes to) each word their own messages and choose their own limits; the rules themselves live here. Nothing
here recurses and nothing raises: a scan of a body deeper than Python's recursion limit just answers.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate

NUL = "\x00"

# ---------------------------------------------------------------- characters that are not text

_NOT_TEXT = re.compile("[\x00\ud800-\udfff]")


def not_text_at(value: str) -> int:
    """The index of the first character of `value` that is not text (a NUL or a lone UTF-16 surrogate), or -1.

    A surrogate pair written as two JSON escapes is decoded to one character, so a surrogate left in a Python
    string stands alone; in text decoded with ``errors="surrogateescape"`` it stands for a byte that is not
    UTF-8. ASCII text (most of it) is answered without the regex."""
    if value.isascii():
        return value.find(NUL)
    found = _NOT_TEXT.search(value)
    return -1 if found is None else found.start()


# ---------------------------------------------------------------- JSON nesting, before parsing

# A JSON string, skipped whole: escapes included, an unterminated one to the end of the text. Every '"' outside
# a string starts one, so the text splits cleanly into strings and what lies between them, where only brackets,
# braces, commas and colons matter.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.S)
_NOT_STRUCTURE = re.compile(r'[^\[\]{},:"]+')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DELTAS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 / -1 as signed bytes
_MAX_KEY_SHOWN = 100

JsonPath = tuple[str | int, ...]


def json_too_deep(text: str, limit: int) -> bool:
    """Whether JSON text nests arrays / objects more than `limit` deep (brackets in strings do not count).

    Linear and all in C but the running sum, so fit for a 1 MiB body; call it before json.loads, whose parser
    recurses. Past a closing bracket with nothing open the JSON is invalid there, and a parser stops before
    going deeper, so such text counts as no deeper than its balanced part."""
    if text.count("[") + text.count("{") <= limit:
        return False  # cannot nest deeper than it has openings (most JSONL lines end here)
    deltas = _JSON_STRING.sub("", text).encode("utf-8", "surrogatepass").translate(_DELTAS, _NOT_BRACKETS)
    return max(accumulate(memoryview(deltas).cast("b")), default=0) > limit


def json_too_deep_at(text: str, limit: int) -> JsonPath | None:
    """Where JSON text first nests deeper than `limit`: the keys and indices of the `limit` containers open
    around the first value too deep (``"?"`` for an object's key not yet read), or None when it does not (or
    is unbalanced in a way a parser refuses before going that deep).

    `json_too_deep` first; only text that is too deep is scanned again, one structural character at a time
    (every string reduced to one '"'), to name where."""
    if not json_too_deep(text, limit):
        return None
    strings = _JSON_STRING.findall(text)
    skeleton = _NOT_STRUCTURE.sub("", _JSON_STRING.sub('"', text))
    # Each open container: (is_object, the index in `strings` of its current key, or its current index);
    # `pending` is the last string read (a key, if a ':' follows).
    stack: list[tuple[bool, int | None]] = []
    read = pending = -1
    for char in skeleton:
        if char == '"':
            read += 1
            pending = read
            continue
        if char in "[{":
            if len(stack) >= limit:
                return tuple(_path_part(strings, is_object, part) for is_object, part in stack)
            stack.append((True, None) if char == "{" else (False, 0))
        elif char in "]}":
            if stack:
                stack.pop()
        elif char == ":":
            if stack and stack[-1][0] and pending >= 0:
                stack[-1] = (True, pending)
        elif stack:  # ","
            is_object, index = stack[-1]
            stack[-1] = (True, None) if is_object else (False, (index or 0) + 1)
        pending = -1
    return None  # unbalanced in a way the fast pass over-counted: the parser refuses it before going deep


def _path_part(strings: list[str], is_object: bool, part: int | None) -> str | int:
    if part is None:
        return "?"
    return _key_name(strings[part]) if is_object else part


def _key_name(token: str) -> str:
    try:
        key = str(json.loads(token))
    except ValueError:
        key = token.strip('"')
    return key if len(key) <= _MAX_KEY_SHOWN else key[:_MAX_KEY_SHOWN] + "..."
