"""Text from a server or a user, made inert before the CLI prints it: never markup, never control codes.

``clean`` removes what a terminal would act on: escape sequences whole (CSI ``ESC [ ... m``, OSC ``ESC ] ...
BEL|ST`` such as hyperlinks, DCS / SOS / PM / APC strings, two-byte ESC codes, and their 8-bit C1 forms), every
other C0 control but tab and newline, DEL, C1 controls, and the bidirectional overrides and isolates (U+202A-U+202E,
U+2066-U+2069) that make text display in another order than it reads. Tabs and newlines become spaces unless
``newlines=True``.

``text`` wraps the cleaned string in a rich ``Text``, which rich prints as is: ``[link=...]``, ``[/]`` and
``:emoji:`` stay literal. ``markup`` escapes it for the places that take a markup string. Every value a command
prints that came from a server or a user goes through one of the three.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.text import Text

# ESC or its 8-bit form, then the sequence's body: a control string (OSC / DCS / SOS / PM / APC) up to BEL or ST
# (or the end), a CSI up to its final byte, or one more byte.
_SEQUENCE = re.compile(
    r"(?:\x1b[\]PX^_]|[\x9d\x90\x98\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|\x1b[ -/]*[0-~]?"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_SPACE = re.compile(r"[\t\n]")


def clean(value: object, *, newlines: bool = False) -> str:
    """``value`` as text a terminal only displays (see the module's docstring)."""
    text = _CONTROL.sub("", _SEQUENCE.sub("", str(value)))
    return text if newlines else _SPACE.sub(" ", text)


def text(value: object, style: str = "") -> Text:
    """``value`` cleaned, as a rich Text (never parsed as markup)."""
    from rich.text import Text

    return Text(clean(value), style=style)


def markup(value: object) -> str:
    """``value`` cleaned and escaped for a rich markup string."""
    from rich.markup import escape

    return escape(clean(value))
