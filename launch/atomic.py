"""The one way gradus replaces a file: whole or not at all, even across a SIGKILL or a power cut.

Both sides of a launch write files that a rerun trusts (the runner's ledger and resolved manifest, a stage's
metrics, done marker, shards and sampler states), so a half-written one would be read as finished work. The
content goes to a temporary file in the target's directory (a rename is atomic only within one file system),
is flushed and fsynced, renamed over the target, and then the directory is fsynced so the rename itself
survives a crash. Without the fsyncs a crash shortly after the rename can leave an empty file under the
final name on ext4 and XFS.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside `path` to write the new content to (by any writer, `np.savez` included);
    when the block ends it is made durable and renamed over `path`. If the block raises, `path` keeps its
    old content and the temporary file is removed.

    `suffix` ends the temporary name, for writers that append their own extension otherwise (`np.savez`
    adds `.npz` to a name without it). The name also holds the process id, so processes writing the same
    target (two plans sharing a preflight cache) never share a temporary file, and ends `.tmp` before the
    suffix so a leftover from a kill is recognisable (`stages.common.unfinished_shards` sweeps them).
    """
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp{suffix}")
    try:
        yield temporary
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def write_atomically(path: str | Path, content: str | bytes) -> None:
    """Replace `path`'s content with `content` (text is written as UTF-8) through `replacing`."""
    with replacing(path) as temporary:
        temporary.write_bytes(content.encode() if isinstance(content, str) else content)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable. Some file systems cannot sync a directory (EINVAL); there the
    rename is as durable as that file system makes it, which is all that can be had."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno != errno.EINVAL:
            raise
    finally:
        os.close(descriptor)
