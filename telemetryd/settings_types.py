"""Value types shared by the daemon's and the sinks' settings models."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field


def _octal(value: Any) -> Any:
    """TOML has octal integers (0o660), but people also write modes as strings ('0660')."""
    if isinstance(value, str):
        try:
            return int(value, 8)
        except ValueError:
            raise ValueError(f"{value!r} is not an octal file mode such as '0660'") from None
    return value


#: A Unix file mode: TOML 0o660 or the string "0660".
FileMode = Annotated[int, BeforeValidator(_octal), Field(ge=0, le=0o777)]
