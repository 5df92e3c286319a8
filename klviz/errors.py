"""The one exception type that reaches users.

A KlvizError's message is a single sentence a person can act on: it names the file or setting
and says what to do. The CLI prints it and exits with code 2; the app shows it with st.error.
Anything else escaping the library is a bug.
"""


class KlvizError(Exception):
    """Bad input or an impossible request, explained in one sentence."""
