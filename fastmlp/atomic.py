"""Atomic file replacement that loses nothing and leaves nothing behind.

:func:`write` puts bytes at a path so that a reader sees either the old file
or the new one, whole, whatever happens to the writer:

- the data goes to a temp file beside the target (``.<name>.<16 hex>.fastmlp-tmp``),
  is fsynced and renamed over the target, then the directory is fsynced;
- while it is written, the temp file is locked (``flock``); the lock dies with
  the process, so the next save to the same path knows a temp file whose lock
  it can take was left by a killed writer and removes it, and never touches a
  live writer's (where ``fcntl`` is missing, as on Windows, nothing is removed);
- the new file gets the mode the existing file had, or else what a plain
  ``open()`` would give under the process's umask; a target the user may not
  write is refused as ``open()`` would refuse it;
- a symbolic link is followed: the file it points to is replaced, and the
  link stays a link (so the link and its target never disagree);
- errors name the user's path, not the temp file.
"""

import hashlib
import os
import secrets
import stat

try:
    import fcntl
except ImportError:            # Windows: no advisory locks, no stale-file cleanup
    fcntl = None

SUFFIX = ".fastmlp-tmp"
_NAME_MAX = 200                # room for the random part and suffix within 255 bytes
_RANDOM = 16                   # hex digits in a temp file's name


def temp_prefix(target):
    """The prefix of every temp file that a save to ``target`` makes (a long
    name is cut and a hash of it added, so two long names never share one)."""
    name = os.path.basename(target)
    if len(name.encode()) > _NAME_MAX:
        cut = name.encode()[:_NAME_MAX // 2].decode(errors="ignore")
        name = cut + "-" + hashlib.sha256(name.encode()).hexdigest()[:16]
    return "." + name + "."


def _is_temp_of(name, prefix):
    """Whether ``name`` is exactly ``prefix`` + a random part + SUFFIX, and not a
    temp file of another target whose name starts the same way."""
    if not (name.startswith(prefix) and name.endswith(SUFFIX)):
        return False
    middle = name[len(prefix):-len(SUFFIX)]
    return len(middle) == _RANDOM and all(c in "0123456789abcdef" for c in middle)


def check_target(path):
    """``path`` as a string if a file can be written there, else an OSError
    naming it: FileNotFoundError (its directory does not exist),
    IsADirectoryError (it is a directory), PermissionError (the directory
    is not writable, or the file exists and is not). A symbolic link is
    judged by the file it points to, as :func:`write` replaces that one.

    The one answer to "can this path be written?" for every writer (saves,
    exports, callbacks, the command line), asked before any work is done.
    """
    shown = os.fspath(path)
    if isinstance(shown, bytes):
        shown = os.fsdecode(shown)
    target = os.path.realpath(shown)
    folder = os.path.dirname(target)
    if _kind(folder, shown) != "dir":
        raise FileNotFoundError(2, f"the directory {folder} does not exist", shown)
    if not os.access(folder, os.W_OK | os.X_OK):   # the temp file is made there
        raise PermissionError(13, f"the directory {folder} is not writable", shown)
    kind = _kind(target, shown)
    if kind == "dir":
        raise IsADirectoryError(21, "it is a directory", shown)
    if kind == "file" and not os.access(target, os.W_OK):
        raise PermissionError(13, "the file exists and is not writable", shown)
    return shown


def _kind(path, shown):
    """Whether ``path`` is a "dir", a "file" or "missing"; PermissionError naming ``shown`` when a
    directory on the way may not be searched (isdir would say "missing")."""
    try:
        return "dir" if stat.S_ISDIR(os.stat(path).st_mode) else "file"
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    except PermissionError:
        raise PermissionError(13, f"{path} may not be reached", shown) from None


def write(path, data):
    """Replace ``path`` with ``data`` (bytes) atomically; see the module docstring.

    Raises OSError (FileNotFoundError, PermissionError, ...) naming ``path``.
    """
    shown = os.fspath(path)
    target = os.path.realpath(shown)
    folder = os.path.dirname(target)
    try:
        check_target(shown)
        mode = _mode_for(target)
        remove_stale(target)
        for attempt in range(3):
            try:
                return _replace(target, folder, data, mode)
            except _Raced:
                if attempt == 2:
                    raise OSError("concurrent saves kept removing the temp file") from None
    except OSError as e:
        if e.filename == shown:
            raise
        reason = e.strerror or str(e)
        if e.errno is None:
            raise OSError(f"could not save {shown}: {reason}") from e
        raise OSError(e.errno, f"could not save the checkpoint ({reason})", shown) from None


def _mode_for(target):
    """The permission bits the new file gets: the old file's, or what a plain
    ``open()`` would give under the umask (:func:`check_target` has already
    refused what ``open`` would)."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask():
    try:                       # Linux says it without changing it (thread-safe)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _replace(target, folder, data, mode):
    tmp = os.path.join(folder, temp_prefix(target) + secrets.token_hex(_RANDOM // 2) + SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    try:
        _lock(fd, tmp)
        with open(fd, "wb", closefd=False) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        else:
            os.chmod(tmp, mode)
        os.replace(tmp, target)            # still locked: a cleaner never sees it unlocked
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        os.close(fd)
    if hasattr(os, "O_DIRECTORY"):         # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


class _Raced(Exception):
    """A concurrent save's cleanup removed our temp file before we locked it."""


def _lock(fd, tmp):
    """Lock the new temp file, and make sure it is still ours: a cleaner may
    have taken the lock and removed the file between mkstemp and here."""
    if fcntl is None:
        return
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        if os.stat(tmp).st_ino == os.fstat(fd).st_ino:
            return
    except FileNotFoundError:
        pass
    raise _Raced()


def remove_stale(target):
    """Remove the temp files that killed saves to ``target`` left behind;
    return their names. A temp file is stale when its lock can be taken."""
    if fcntl is None:
        return []
    folder, prefix = os.path.dirname(target), temp_prefix(target)
    removed = []
    try:
        names = [n for n in os.listdir(folder) if _is_temp_of(n, prefix)]
    except OSError:
        return removed
    for name in names:
        path = os.path.join(folder, name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue                       # gone already, or not ours to read
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Still the file we locked? A live writer may have renamed it into place.
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                os.unlink(path)
                removed.append(name)
        except OSError:
            pass                           # locked: a live writer's
        finally:
            os.close(fd)
    return removed
