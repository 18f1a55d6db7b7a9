"""Writing a file so that a reader never sees half of it."""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """A fresh temporary path next to ``path``; when the block succeeds it is renamed onto
    ``path`` (atomic on one filesystem), when it fails it is removed and ``path`` is untouched.

    The temporary file is created as ``open()`` creates files (mode 0666 & ~umask, so the
    result is readable by the rest of a research group, unlike ``mkstemp``'s 0600); missing
    parent directories are made.

    Examples:
      >>> import os, tempfile
      >>> p = os.path.join(tempfile.mkdtemp(), "out.txt")
      >>> with atomic_path(p) as tmp:
      ...     _ = open(tmp, "w").write("done")
      >>> open(p).read()
      'done'
    """
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{os.path.basename(path)}.{uuid.uuid4().hex}{suffix}")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
