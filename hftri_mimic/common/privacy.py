"""Who may read what the workflow writes (docs/SECURITY.md).

Cohort tables, signal stores, trained models, reports and downloaded MIMIC files are patient data under the
PhysioNet data use agreement. A shared cluster gives every user a login on the same file system, and the usual umask
(022) creates files every one of them can read. The workflow therefore sets its own umask (inherited by every job
it starts, and set again by every cluster job, which reads the Snakefile anew) and closes the top folders of its
outputs and downloads, which also protects files an earlier run created with looser modes.

``privacy.group_access`` opens them to one group (a project team): ``read`` or ``write``; ``privacy.group`` names
that group, which then owns the top folders, and the setgid bit passes it on to everything created below them.
"""

from __future__ import annotations

import grp
import os
import stat
from collections.abc import Iterable
from pathlib import Path

# The bits new files and folders must not get, for each config value of privacy.group_access.
UMASKS = {"none": 0o077, "read": 0o027, "write": 0o007}


def output_umask(group_access: str) -> int:
    """The umask for ``privacy.group_access``: ``none`` (only the user), ``read`` or ``write`` (the group too)."""
    try:
        return UMASKS[group_access]
    except KeyError:
        raise ValueError(f"privacy.group_access: {group_access!r} is not one of {sorted(UMASKS)}") from None


def folder_mode(group_access: str, group: str | None) -> int:
    """The mode of a top output folder: rwx for the user, what the group may, nothing for others; setgid with a
    named group so that files created below belong to it."""
    mode = 0o777 & ~output_umask(group_access)
    return mode | stat.S_ISGID if group else mode


def group_id(group: str) -> int:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError(f"privacy.group: no group named {group!r} on this machine") from None


def set_umask(group_access: str) -> int:
    """Set the process umask (jobs inherit it); returns the previous one."""
    return os.umask(output_umask(group_access))


def close_folders(folders: Iterable[Path | str], group_access: str, group: str | None = None) -> list[Path]:
    """Give each existing folder the private mode (and ``group``); returns those changed. Folders that do not exist
    yet are left to the umask; a folder the user does not own cannot be changed and is an error that says so."""
    mode = folder_mode(group_access, group)
    gid = group_id(group) if group else None
    changed = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            continue
        info = folder.stat()
        if gid is not None and info.st_gid != gid:
            os.chown(folder, -1, gid)
        if stat.S_IMODE(info.st_mode) != mode:
            try:
                os.chmod(folder, mode)
            except PermissionError:
                raise PermissionError(
                    f"{folder}: mode {stat.S_IMODE(info.st_mode):04o} lets others in and cannot be changed by this "
                    f"user; make it {mode:04o} (privacy.group_access)"
                ) from None
            changed.append(folder)
    return changed


def readable_by_others(root: Path | str) -> list[Path]:
    """Every path below ``root`` (itself included) that users outside the owner's group could read or enter."""
    root = Path(root)
    return [path for path in (root, *root.rglob("*")) if not path.is_symlink() and path.lstat().st_mode & 0o007]
