"""The [auth] table of a test daemon's configuration, and the tokens it knows."""

from __future__ import annotations

from telemetryd.auth import hash_token

ALICE = "alice-token-0123456789abcdefghijklmnopqrstuvwxyz"  # may send every schema
KERNEL_BOT = "kernel-bot-token-0123456789abcdefghijklmnopqrst"  # kernel_actions only


def auth_section(**flags: bool) -> str:
    """[auth] with `flags` (required, protect_health, ...) and the tokens of alice and
    kernel-bot."""
    lines = "\n".join(f"{key} = {str(value).lower()}" for key, value in flags.items())
    return f"""
[auth]
{lines}

[[auth.tokens]]
identity = "alice"
hash = "{hash_token(ALICE)}"

[[auth.tokens]]
identity = "kernel-bot"
hash = "{hash_token(KERNEL_BOT)}"
allowed_schemas = ["https://events.jupyter.org/jupyter_server/kernel_actions/*"]
"""
