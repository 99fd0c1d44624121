"""User-facing errors: one clear line naming what is wrong and how to fix it."""

import errno


class HfpruneError(Exception):
    """An error caused by the user's input (recipe, paths, data, flags).

    The CLI prints ``str(error)`` as a single line and exits with status 2, never a traceback.
    """


class Interrupted(Exception):
    """Ctrl-C or SIGTERM stopped a command; ``str(stop)`` says what is kept and the command that resumes. The
    CLI prints it as one line and exits with status 130."""


def reason(error: BaseException, limit: int = 300, kind: bool = False) -> str:
    """A library error as one line of at most ``limit`` characters, to quote inside an HfpruneError, with every
    known secret redacted first; ``kind`` puts the error's class first (``OSError: ...``), where the text alone
    would not say what failed."""
    from hfprune.secrets import redact

    text = redact(" ".join(str(error).split()))  # before the cut: no half secret survives it
    if kind:
        return f"{type(error).__name__}: {text[:limit] or 'no details'}"
    return (text or type(error).__name__)[:limit]


def storage_problem(error: OSError) -> str | None:
    """One line for a full disk, a read-only file system or a permission refused (what writing outputs
    meets), or None for other OS errors. Everything hfprune records is written whole or not at all, so the
    line says that rerunning the command resumes."""
    where = f" ({error.filename})" if error.filename else ""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on the device{where}; free some space, then run the same command again "
                "(everything already recorded is kept)")
    if error.errno in (errno.EISDIR, errno.ENOTDIR):
        return f"{error.strerror}{where}: hfprune writes a file there; move it away or choose another --out"
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (f"{error.strerror or 'not writable'}{where}; choose a writable --out or fix its permissions, then "
                "run the same command again (everything already recorded is kept)")
    return None
