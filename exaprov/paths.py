"""Checks of every path the user names (flags, the config's `state:`, $KUBECONFIG), made before
the lock and before any AWS call: a regular file (never a folder, FIFO or device, which would
hang or fill memory), readable, and writable where exaprov will write, else exit 2 with a
message naming the flag and the path.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from exaprov.errors import InputError


def file_kind(mode: int) -> str:
    """`a folder`, `a FIFO (named pipe)`, `a character device`... for a message."""
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISREG, "a regular file"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _fail(flag: str, path: Path | str, what: str, hint: str | None = None) -> InputError:
    return InputError(f"{flag} {str(path)!r}: {what}", hint=hint)


def check_file(flag: str, path: Path | str | None, *, write: bool, must_exist: bool = False,
               what: str = "file") -> None:
    """`path` is a regular file that can be read (and written, with `write`), or, when it does
    not exist yet and need not, a name in a folder exaprov can create it in."""
    if path is None:
        return
    if str(path).strip() in ("", "."):
        raise _fail(flag, path, f"an empty path; name the {what}")
    path = Path(path).expanduser()
    try:
        info = path.stat()  # follows a symlink; never opens (a FIFO would block an open)
    except FileNotFoundError:
        if must_exist:
            raise _fail(flag, path, "no such file") from None
        _check_folder_for(flag, path)
        return
    except OSError as exc:
        raise _fail(flag, path, f"cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise _fail(flag, path, f"is {file_kind(info.st_mode)}, not a {what}",
                    hint=f"name a regular {what}")
    if not os.access(path, os.R_OK):
        raise _fail(flag, path, "cannot be read (permission denied)")
    if write:
        if not os.access(path, os.W_OK):
            raise _fail(flag, path, "cannot be written (permission denied)")
        # Files are replaced atomically: a temp file is made beside them.
        folder = path.resolve().parent
        if not os.access(folder, os.W_OK | os.X_OK):
            raise _fail(flag, path, f"its folder {str(folder)!r} cannot be written (permission "
                        "denied): exaprov writes a new file beside it and renames it over")


def _check_folder_for(flag: str, path: Path) -> None:
    """A missing file: its nearest existing ancestor must be a folder exaprov can write in."""
    folder = path.absolute().parent
    while True:
        try:
            info = folder.stat()
            break
        except FileNotFoundError:
            folder = folder.parent
        except OSError as exc:
            raise _fail(flag, path, f"its folder {str(folder)!r} cannot be reached "
                        f"({exc.strerror})") from None
    if not stat.S_ISDIR(info.st_mode):
        raise _fail(flag, path, f"{str(folder)!r} is {file_kind(info.st_mode)}, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _fail(flag, path, f"the folder {str(folder)!r} cannot be written (permission "
                    "denied)")


def check_folder(flag: str, path: Path | str) -> None:
    """`path` is, or can be created as, a folder exaprov can write in."""
    if str(path).strip() in ("", "."):
        raise _fail(flag, path, "an empty path; name a folder")
    path = Path(path).expanduser()
    try:
        info = path.stat()
    except FileNotFoundError:
        _check_folder_for(flag, path / "x")
        return
    except OSError as exc:
        raise _fail(flag, path, f"cannot be reached ({exc.strerror})") from None
    if not stat.S_ISDIR(info.st_mode):
        raise _fail(flag, path, f"is {file_kind(info.st_mode)}, not a folder")
    if not os.access(path, os.W_OK | os.X_OK):
        raise _fail(flag, path, "cannot be written (permission denied)")
