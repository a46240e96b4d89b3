"""Atomic output: write to a temporary name beside the target, then rename.

A crash or an error half-way leaves no partial file behind. Also the one TOML reader of
the config loaders, so every config file fails the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from recscope.errors import ConfigError, OutputError

MANIFEST = ".recscope-manifest.json"
"""The file in each output folder that lists the names recscope wrote there."""


def _abs(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(path))


def _owned(folder: Path) -> set[str]:
    """Names recscope wrote in ``folder`` (from its manifest; empty when there is none)."""
    try:
        return set(json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def _write_manifest(folder: Path, names: set[str]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f"{MANIFEST}.", suffix=".tmp", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"written_by": "recscope", "files": sorted(names)}, fh, indent=1)
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, folder / MANIFEST)


def _make_parent(target: Path) -> None:
    parent = target.parent
    for p in [parent, *parent.parents]:
        if p.exists() and not p.is_dir():
            raise OutputError("is a file, so it cannot hold outputs", path=str(p))
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder: {exc.strerror}", path=str(parent)) from None


def _check_writable(target: Path, path: str | os.PathLike[str]) -> None:
    """Refuse an output whose nearest existing folder cannot be written (tried by creating
    and removing a probe file, which also holds for the root user)."""
    folder = next((p for p in target.parents if p.exists()), None)
    if folder is None or not folder.is_dir():
        return
    try:
        fd, probe = tempfile.mkstemp(prefix=".recscope-probe.", dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write in {folder}: {exc.strerror}", path=str(path)) from None
    os.close(fd)
    os.unlink(probe)


def check_out_file(path: str | os.PathLike[str]) -> Path:
    """Refuse an output file path before any work: a folder there, a parent that is a file,
    or an existing file recscope did not write (it is never replaced)."""
    target = _abs(path)
    if target.is_dir():
        raise OutputError("is a folder; expected a file name", path=str(path))
    for p in target.parents:
        if p.exists() and not p.is_dir():
            raise OutputError("is a file, so it cannot hold outputs", path=str(p))
    if target.exists() and target.name not in _owned(target.parent):
        raise OutputError("exists and was not written by recscope; it is left as it is "
                          "(remove it or choose another name)", path=str(path))
    _check_writable(target, path)
    return target


def check_out_dir(path: str | os.PathLike[str], *, force: bool) -> Path:
    """Refuse an output folder before any work: a file there, or a folder that is not
    empty unless ``force`` (and then only names recscope wrote there will be replaced)."""
    target = _abs(path)
    if target.exists() and not target.is_dir():
        raise OutputError("is a file; expected a folder", path=str(path))
    for p in target.parents:
        if p.exists() and not p.is_dir():
            raise OutputError("is a file, so it cannot hold outputs", path=str(p))
    if target.is_dir() and any(target.iterdir()) and not force:
        raise OutputError("exists and is not empty; pass --force to replace the files "
                          "recscope wrote there (other files are kept)", path=str(path))
    _check_writable(target / "x", path)
    return target


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    An existing file at ``path`` is replaced only if recscope wrote it (the folder's
    manifest lists it); the name is added to the manifest.
    """
    target = check_out_file(path)
    _make_parent(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise OutputError(f"cannot write here: {exc.strerror}", path=str(path)) from None
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; use the usual file mode
    try:
        yield tmp_path
        os.replace(tmp_path, target)
        owned = _owned(target.parent)
        if target.name not in owned:
            _write_manifest(target.parent, owned | {target.name})
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], *, force: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; move its contents onto ``path`` on success.

    A new or empty ``path`` receives the folder whole. An existing, non-empty ``path`` is
    refused unless ``force``; then the names recscope wrote there before (its manifest)
    are replaced or removed, and every other file is kept. A name that the new output
    shares with a file recscope did not write is an error, raised before anything moves.
    """
    target = check_out_dir(path, force=force)
    _make_parent(target)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp",
                                    dir=target.parent))
    except OSError as exc:
        raise OutputError(f"cannot write here: {exc.strerror}", path=str(path)) from None
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; use the usual directory mode
    try:
        yield tmp
        new = {p.name for p in tmp.iterdir() if p.name != MANIFEST}
        if not target.exists() or not any(target.iterdir()):
            if target.exists():
                target.rmdir()
            _write_manifest(tmp, new)
            os.replace(tmp, target)
            return
        owned = _owned(target)
        clash = sorted(n for n in new if (target / n).exists() and n not in owned)
        if clash:
            raise OutputError(f"holds {clash[0]!r}, which recscope did not write; it is "
                              "left as it is (choose another folder)", path=str(path))
        for name in owned | new:
            old = target / name
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            elif old.exists() or old.is_symlink():
                old.unlink()
        for name in new:
            os.replace(tmp / name, target / name)
        _write_manifest(target, new)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_all(outputs: Mapping[str | os.PathLike[str], str | bytes]) -> list[Path]:
    """Write several files all or none (``evaluate --json --html``): every path is checked
    and every file written to its temporary name first; only then are they renamed."""
    targets = [check_out_file(p) for p in outputs]
    if len(set(targets)) != len(targets):
        dup = next(str(p) for p in outputs if targets.count(_abs(p)) > 1)
        raise OutputError("is given for two outputs; choose one name per output", path=dup)
    with contextlib.ExitStack() as stack:
        for path, content in outputs.items():
            tmp = stack.enter_context(atomic_path(path))
            if isinstance(content, bytes):
                tmp.write_bytes(content)
            else:
                tmp.write_text(content, encoding="utf-8")
    return [Path(p) for p in outputs]


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically; NaN becomes null."""
    return write_text(path, json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n")


def write_parquet(path: str | os.PathLike[str], table: pa.Table) -> Path:
    """Write an Arrow table to Parquet atomically, deterministically (no created-by drift)."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", write_statistics=True)
    return Path(path)


def jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays and non-finite floats to plain JSON values."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [jsonable(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def did_you_mean(path: str | os.PathLike[str]) -> str:
    """A hint for a path that does not exist: the closest names beside it (or inside the
    folder of the same name: ``split/train.parquet`` suggests ``split/train/``), as
    ``" (did you mean ...?)"``; empty when nothing is close."""
    import difflib

    p = Path(path)
    parent = next((q for q in [p.parent, *p.parent.parents] if q.is_dir()), None)
    if parent is None:
        return ""
    try:
        names = sorted(x.name for x in parent.iterdir() if not x.name.startswith("."))
    except OSError:
        return ""
    want = p.name if parent == p.parent else p.relative_to(parent).parts[0]
    close = difflib.get_close_matches(want, names, n=2, cutoff=0.6)
    stem = Path(want).stem
    close += [n for n in names if n == stem and n not in close]  # train.parquet -> train/
    if not close:
        return ""
    shown = [str(parent / n) + ("/" if (parent / n).is_dir() else "") for n in close[:2]]
    return f" (did you mean {' or '.join(shown)}?)"


def read_toml(path: str | os.PathLike[str], what: str = "config") -> dict[str, Any]:
    """Parse a TOML file; a missing file or bad TOML raises ConfigError naming the file
    (``what`` names the kind of file in the message: "metrics file not found")."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"is a folder; expected a {what} file (TOML)", file=str(p))
    if not p.is_file():
        raise ConfigError(f"{what} file not found", file=str(p))
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                          f"{exc.start}); save the {what} file as UTF-8", file=str(p)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} file: {exc.strerror}", file=str(p)) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=str(p)) from None
