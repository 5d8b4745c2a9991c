"""Value types shared by the daemon's and the sinks' settings models."""

from __future__ import annotations

import grp
import os
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field


def octal_mode(value: Any) -> Any:
    """TOML has octal integers (0o660), but people also write modes as strings ('0660')."""
    if isinstance(value, str):
        try:
            return int(value, 8)
        except ValueError:
            raise ValueError(f"{value!r} is not an octal file mode such as '0660'") from None
    return value


#: A Unix file mode: TOML 0o660 or the string "0660".
FileMode = Annotated[int, BeforeValidator(octal_mode), Field(ge=0, le=0o777)]


def gid_of(group: str) -> int:
    """The id of a group given by name or number; KeyError if no such name exists."""
    return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid


def _existing_group(value: str) -> str:
    try:
        gid_of(value)
    except KeyError:
        raise ValueError(f"no group {value!r} on this system") from None
    return value


#: A Unix group, by name or number, that exists where the configuration is read.
GroupName = Annotated[str, AfterValidator(_existing_group)]


class GroupError(OSError):
    """A file could not be given to its configured group; `key` names the setting."""

    def __init__(self, key: str, path: os.PathLike[str] | str, group: str, cause: OSError) -> None:
        super().__init__(
            cause.errno,
            f"cannot give {os.fspath(path)} to group {group!r}: {cause.strerror or cause} (the "
            "daemon's user must be a member of the group: SupplementaryGroups= in its unit)",
        )
        self.key = key


def give_to_group(path: os.PathLike[str] | str, group: str | None, key: str) -> None:
    """chgrp `path` to `group` (nothing when None); raises GroupError naming `key`."""
    if group is None:
        return
    try:
        os.chown(path, -1, gid_of(group))
    except OSError as e:
        raise GroupError(key, path, group, e) from e
