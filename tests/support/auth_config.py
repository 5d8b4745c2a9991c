"""The [auth] table of a test daemon's configuration, and the tokens it knows."""

from __future__ import annotations

import hashlib

ALICE = "alice-token-0123456789abcdefghijklmnopqrstuvwxyz"  # may send every schema
KERNEL_BOT = "kernel-bot-token-0123456789abcdefghijklmnopqrst"  # kernel_actions only


def token_hash(token: str) -> str:
    """A token as the configuration names it (`telemetryd hash-token`)."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def auth_section(**flags: bool) -> str:
    """[auth] with `flags` (required, protect_health, ...) and the tokens of alice and
    kernel-bot."""
    lines = "\n".join(f"{key} = {str(value).lower()}" for key, value in flags.items())
    return f"""
[auth]
{lines}

[[auth.tokens]]
identity = "alice"
hash = "{token_hash(ALICE)}"

[[auth.tokens]]
identity = "kernel-bot"
hash = "{token_hash(KERNEL_BOT)}"
allowed_schemas = ["https://events.jupyter.org/jupyter_server/kernel_actions/*"]
"""
