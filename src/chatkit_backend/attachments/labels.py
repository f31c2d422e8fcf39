"""How an attachment is introduced to the model: one line naming the file and its type.

The converter writes it before each attachment's content; the offline model reads it
back to say what it received, as a real model would read it.
"""

import re

LABEL = re.compile(r'^Attached file "(?P<name>[^"\n]+)" \((?P<type>[^()\s]+)\)')


def label(name: str, mime_type: str) -> str:
    # Stored names never contain quotes or newlines (see names.safe_name).
    return f'Attached file "{name}" ({mime_type})'
