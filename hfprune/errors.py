"""User-facing errors: one clear line naming what is wrong and how to fix it."""


class HfpruneError(Exception):
    """An error caused by the user's input (recipe, paths, data, flags).

    The CLI prints ``str(error)`` as a single line and exits with status 2, never a traceback.
    """


def reason(error: BaseException, limit: int = 300, kind: bool = False) -> str:
    """A library error as one line of at most ``limit`` characters, to quote inside an HfpruneError; ``kind``
    puts the error's class first (``OSError: ...``), where the text alone would not say what failed."""
    text = " ".join(str(error).split())
    if kind:
        return f"{type(error).__name__}: {text[:limit] or 'no details'}"
    return (text or type(error).__name__)[:limit]
