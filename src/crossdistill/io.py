"""Atomic file and directory writes, the ``runs.jsonl`` append, and the one file hash.

Every artifact crossdistill leaves on disk (caches, manifests, converted models, plots, reports, run records) goes
through this module, so a crash or a kill at any instant leaves either the old content or the complete new one —
never a half-written file a later run would trust. A file is written to a temporary sibling
(``.<name>.<random>.tmp``, in the same directory so the rename never crosses a filesystem), flushed and fsynced,
renamed over the target with :func:`os.replace` (atomic on POSIX), and then the directory is fsynced so the rename
itself survives a power loss. On any error the temporary file is removed and the old file is left untouched.

This is the bottom layer: it imports only the standard library (safetensors lazily, for :func:`save_safetensors`)
and nothing from crossdistill.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Literal

FILE_MODE = 0o644
"""Mode of every file written here: :func:`tempfile.mkstemp` creates 0600, but artifacts are meant to be shared like
any file a program saves."""
DIR_MODE = 0o755
"""Mode of a published directory (:func:`tempfile.mkdtemp` creates 0700), for the same reason."""
TEMP_SUFFIX = ".tmp"
"""Suffix of every temporary sibling, so a writer can sweep the leftovers of a killed run with ``.*.tmp``."""


# ------------------------------------------------------------------------------------------------------ fsync
def fsync_dir(directory: str | Path) -> None:
    """Flush ``directory``'s entries (a rename or a new file in it) to disk.

    Filesystems that cannot open or fsync a directory (some network mounts) raise ``OSError``; the rename is still
    atomic there, only not yet durable, so that is not an error worth failing a write for.
    """
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_sibling(path: Path) -> str:
    """A new empty temporary file next to ``path`` (same directory, hence same filesystem); returns its name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    return tmp


def _commit(tmp: str, path: Path) -> None:
    """Make ``tmp`` durable and readable, then rename it over ``path``."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)  # a library that wrote ``tmp`` by name may not have fsynced it
    finally:
        os.close(fd)
    os.chmod(tmp, FILE_MODE)
    os.replace(tmp, path)
    fsync_dir(path.parent)


# ------------------------------------------------------------------------------------------------------ files
@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` for a library that writes by file name (safetensors, matplotlib);
    when the block ends without error it is fsynced and renamed over ``path``, otherwise removed.

    The temporary name ends in ``.tmp``: a writer that infers the format from the extension must be told it.
    """
    path = Path(path)
    tmp = _temp_sibling(path)
    try:
        yield Path(tmp)
        _commit(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_file(path: str | Path, mode: Literal["wb", "w"] = "wb", encoding: str = "utf-8") -> Iterator[IO[Any]]:
    """Yield an open file whose content replaces ``path`` atomically when the block ends without error (for
    streamed writes: ``np.save``, one jsonl record at a time)."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically (readers see the old file or all of the new one); returns ``path``."""
    path = Path(path)
    with atomic_file(path, "wb") as handle:
        handle.write(data)
    return path


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """:func:`write_bytes` of ``text`` encoded with ``encoding``."""
    return write_bytes(path, text.encode(encoding))


def write_json(path: str | Path, obj: Any, **dumps: Any) -> Path:
    """:func:`write_text` of ``json.dumps(obj, **dumps)`` plus a final newline (``indent``, ``sort_keys`` ... pass
    through)."""
    return write_text(path, json.dumps(obj, **dumps) + "\n")


def save_safetensors(path: str | Path, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> Path:
    """Save a dict of torch tensors as a safetensors file, atomically; ``metadata`` goes into its header."""
    from safetensors.torch import save_file

    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(dict(tensors), str(tmp), metadata=dict(metadata) if metadata is not None else None)
    return path


def append_line(path: str | Path, line: str) -> None:
    """Append one line (a newline is added) with a single ``write`` on an ``O_APPEND`` descriptor, then fsync.

    One write of one line keeps concurrent appenders (several runs sharing a ``runs.jsonl``) from interleaving
    inside a record, and a reader never sees half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------------ directories
@contextmanager
def publish_dir(target: str | Path, if_exists: Literal["replace", "keep"] = "replace") -> Iterator[Path]:
    """Yield an empty temporary sibling directory to fill; when the block ends without error it becomes ``target``.

    Readers never see a partly written ``target``: it is absent, the old one, or the complete new one. On error the
    temporary directory is removed and ``target`` is left as it was.

    Args:
        target: the directory to publish.
        if_exists: what to do when ``target`` exists once the new one is complete: ``replace`` it (the old copy is
            renamed aside first and deleted only after the new one is in place), or ``keep`` it and discard the new
            one (another process finished the same content first).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, DIR_MODE)
        _swap_in(tmp, target, if_exists)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(tmp: Path, target: Path, if_exists: Literal["replace", "keep"]) -> None:
    """Rename the complete ``tmp`` onto ``target`` (see :func:`publish_dir`)."""
    if not target.exists():
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process published ``target`` between the check and the rename (a non-empty directory
            # cannot be renamed over); fall through to the existing-target policy.
            if not target.exists():
                raise
        else:
            fsync_dir(target.parent)
            return
    if if_exists == "keep":
        shutil.rmtree(tmp, ignore_errors=True)
        return
    # A directory cannot be renamed over a non-empty one: move the old copy aside, put the new one in its place,
    # restore the old one if that fails, and only then delete it.
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", suffix=TEMP_SUFFIX, dir=target.parent))
    os.replace(target, old / target.name)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old / target.name, target)
        shutil.rmtree(old, ignore_errors=True)
        raise
    fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------------------ hash
def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks (never the whole file in memory)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


# -------------------------------------------------------------------------------------------------- OS errors
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_DISK_FULL_TEXT = ("No space left on device", "Disk quota exceeded")
_WRITE_FAILED_TEXT = ("file write failed",)  # torch.save's PytorchStreamWriter keeps no errno


def os_error_in(exc: BaseException) -> OSError | None:
    """The operating-system error behind ``exc``: ``exc`` itself or one in its ``__cause__`` / ``__context__``
    chain; ``None`` when there is none.

    Libraries that wrap a failed write keep only the message (safetensors, ``torch.save``): a message saying "No
    space left on device" counts as ``ENOSPC``, one saying "file write failed" as ``EIO``.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            return current
        text = str(current)
        if any(t in text for t in _DISK_FULL_TEXT):
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), getattr(current, "filename", None))
        if any(t in text for t in _WRITE_FAILED_TEXT):
            return OSError(errno.EIO, f"write failed ({text.strip()[:200]})")
        current = current.__cause__ or current.__context__
    return None


def _existing_parent(path: Path) -> Path:
    path = path.expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def free_space(path: str | Path) -> str:
    """``'<free> free on <mount>'`` for the filesystem holding ``path`` (or its nearest existing parent)."""
    where = _existing_parent(Path(path))
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return "free space unknown"
    mount = where
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    return f"{format_bytes(free)} free on {mount}"


def describe_os_error(err: OSError, path: str | Path | None = None) -> str:
    """One line for an operating-system error: what went wrong, the path, and the fix. A full disk (``ENOSPC``,
    ``EDQUOT``) says so and reports the free space of the filesystem that holds the path.

    ``path`` is the file or directory being written when the error itself names none (``err.filename`` wins).
    """
    target = err.filename if getattr(err, "filename", None) else path
    where = f" {target}" if target is not None else ""
    if err.errno in _DISK_FULL:
        space = f" ({free_space(target)})" if target is not None else ""
        return (f"disk full: no space left on the device while writing{where}{space}; free some space or write to "
                "another disk, then rerun the same command (complete files are kept, nothing half-written is used)")
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied:{where}; choose a directory you can write to, or fix its permissions"
    if err.errno == errno.EROFS:
        return f"read-only file system:{where}; write to a writable directory instead"
    if err.errno == errno.ENOENT:
        return f"no such file or directory:{where}; check the path"
    reason = err.strerror or str(err)
    space = f" ({free_space(target)})" if target is not None else ""
    return f"I/O error: {reason}:{where}{space}; check the disk and rerun the same command"


def os_error_message(exc: BaseException, path: str | Path | None = None) -> str | None:
    """:func:`describe_os_error` of the OS error behind ``exc`` (:func:`os_error_in`), or ``None`` when ``exc`` is
    not one: a command catches ``Exception``, prints this, and re-raises anything else."""
    err = os_error_in(exc)
    return None if err is None else describe_os_error(err, path)


def looks_like_path(ref: str) -> bool:
    """Whether a model reference is meant as a local path rather than a Hub id (``org/name``): it starts with
    ``/``, ``.`` or ``~``, ends with ``.gguf``, has more than one ``/``, or holds a backslash."""
    return (ref.startswith(("/", ".", "~")) or ref.endswith(".gguf") or ref.count("/") > 1 or "\\" in ref)
