"""The `telemetryd` command: run the daemon, check its configuration, inspect schemas, send."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from telemetryd import __version__

if TYPE_CHECKING:
    from telemetryd.client import Rejection


def _cmd_run(args: argparse.Namespace) -> int:
    from telemetryd import daemon, logs
    from telemetryd.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as e:
        for line in str(e).splitlines():
            print(f"telemetryd: error: {line}", file=sys.stderr)
        return 2
    logs.setup(args.log_level or config.log.level, config.log.format)
    return daemon.run(config)


def _cmd_check_config(args: argparse.Namespace) -> int:
    from telemetryd.config import ConfigError, default_config_path, load_config
    from telemetryd.core.schemas.model import SchemaLoadError
    from telemetryd.daemon import load_registry

    path = args.file or default_config_path()
    try:
        config = load_config(path)
        registry = load_registry(config)
    except (ConfigError, SchemaLoadError) as e:
        print(e, file=sys.stderr)
        return 2
    print(f"{path}: OK ({len(config.sinks)} sinks, {len(registry)} schemas)")
    return 0


def _event_lines(args: argparse.Namespace) -> list[bytes]:
    if args.schema_id is None:
        return [line for line in sys.stdin.buffer.read().split(b"\n") if line.strip()]
    if args.version is None or args.data is None:
        raise SystemExit("telemetryd send: give SCHEMA_ID VERSION DATA, or NDJSON on stdin")
    try:
        data = msgspec.json.decode(args.data)
    except msgspec.DecodeError as e:
        raise SystemExit(f"telemetryd send: DATA is not JSON: {e}") from None
    event: dict[str, object] = {"schema_id": args.schema_id, "version": args.version, "data": data}
    if args.timestamp:
        event["timestamp"] = args.timestamp
    return [msgspec.json.encode(event)]


def _cmd_send(args: argparse.Namespace) -> int:
    socket_path = args.socket
    if socket_path is None:
        from telemetryd.config import ConfigError, load_config

        try:
            server = load_config(args.config).server
        except ConfigError as e:
            print(e, file=sys.stderr)
            return 2
        if server.unix_socket is None:
            print(
                "telemetryd send: no unix_socket in the configuration; use --socket",
                file=sys.stderr,
            )
            return 2
        socket_path = server.unix_socket
    lines = _event_lines(args)
    verdicts = _send(Path(socket_path), lines, args.timeout)
    if isinstance(verdicts, str):
        print(f"telemetryd send: {verdicts}", file=sys.stderr)
        return 3
    rejected = 0
    for number in range(1, len(lines) + 1):
        rejection = verdicts.get(number)
        if rejection is None:
            print(f"{number}: accepted")
        else:
            rejected += 1
            print(f"{number}: rejected: {rejection.reason}: {rejection.message}")
    return 1 if rejected else 0


def _send(path: Path, lines: list[bytes], timeout_secs: float) -> dict[int, Rejection] | str:
    """Sends with the client library; the rejections by line number, or why it failed."""
    from telemetryd.client import Client

    rejections: dict[int, Rejection] = {}
    client = Client(
        path,
        on_rejected=lambda rejection: rejections.__setitem__(rejection.seq, rejection),
        flush_at_exit_secs=0,
        max_buffer_events=max(len(lines), 1),
        max_buffer_bytes=sum(map(len, lines)) + 1024 * (len(lines) + 1),
    )
    try:
        for line in lines:
            client.emit_line(line)  # the client numbers events from 1, as lines are numbered
        deadline = time.monotonic() + timeout_secs
        while not client.flush(timeout=0.05):
            stats = client.stats()
            if stats.connects == 0 and stats.connect_failures > 0:
                return f"cannot send to telemetryd at {path}: {client.last_error}"
            if time.monotonic() > deadline:
                return (
                    f"telemetryd at {path} settled {stats.acknowledged} of {len(lines)} events "
                    f"in {timeout_secs:g}s"
                )
        return rejections
    finally:
        client.close(timeout=0)


def _cmd_config_reference(args: argparse.Namespace) -> int:
    from telemetryd.config_reference import render_default_config, render_markdown

    sys.stdout.write(render_default_config() if args.toml else render_markdown())
    return 0


def _cmd_hash_token(args: argparse.Namespace) -> int:
    from telemetryd.auth import hash_token, new_token

    token: str | None = args.token
    if token == "-":
        token = sys.stdin.readline().strip()
        if not token:
            print("telemetryd hash-token: no token on stdin", file=sys.stderr)
            return 2
    if token is not None:
        print(f'hash = "{hash_token(token)}"')
        return 0
    token = new_token()
    print(f"token: {token}")
    print("(shown once: give it to the client; telemetryd.toml keeps only its hash)")
    print()
    print("[[auth.tokens]]")
    print('identity = "CHANGE-ME"')
    print(f'hash = "{hash_token(token)}"')
    return 0


def build_parser() -> argparse.ArgumentParser:
    from telemetryd import schema_commands

    parser = argparse.ArgumentParser(
        prog="telemetryd", description="The event bus for Jupyter deployments."
    )
    parser.add_argument("--version", action="version", version=f"telemetryd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument(
        "-c",
        "--config",
        type=Path,
        help="configuration file (default: ./telemetryd.toml, "
        "then /etc/telemetryd/telemetryd.toml, or $TELEMETRYD_CONFIG)",
    )
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser("check-config", help="validate a configuration file and its schemas")
    check.add_argument("file", nargs="?", type=Path)
    check.set_defaults(func=_cmd_check_config)

    schema_commands.add_parser(sub)

    reference = sub.add_parser(
        "config-reference",
        help="print every configuration key with its type, default and meaning (Markdown)",
    )
    reference.add_argument(
        "--toml", action="store_true", help="the default configuration file, every key in it"
    )
    reference.set_defaults(func=_cmd_config_reference)

    hash_cmd = sub.add_parser(
        "hash-token",
        help="make an HTTP API token and its [[auth.tokens]] entry, or hash a given token",
        description="With no TOKEN: generate one, print it once and the [[auth.tokens]] "
        "snippet holding its hash. With TOKEN (or - to read it from stdin): print its hash.",
    )
    hash_cmd.add_argument("token", nargs="?", metavar="TOKEN")
    hash_cmd.set_defaults(func=_cmd_hash_token)

    send = sub.add_parser(
        "send",
        help="send events and print the daemon's verdict for each",
        description="Send one event (SCHEMA_ID VERSION DATA) or NDJSON events "
        "from stdin; exit status 1 if any was rejected.",
    )
    send.add_argument("schema_id", nargs="?", metavar="SCHEMA_ID")
    send.add_argument("version", nargs="?", metavar="VERSION")
    send.add_argument("data", nargs="?", metavar="DATA", help="the event's data, as JSON")
    send.add_argument("--timestamp", help="RFC 3339 time of the event (default: now)")
    send.add_argument("-s", "--socket", type=Path, help="daemon socket (default: from the config)")
    send.add_argument("-c", "--config", type=Path)
    send.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the daemon's verdicts (default: 30)",
    )
    send.set_defaults(func=_cmd_send)
    return parser


#: The `server` extra's modules: without them only the client and `telemetryd send` work.
SERVER_MODULES = frozenset(
    {"anyio", "uvloop", "pydantic", "fastjsonschema", "jsonschema", "yaml", "httptools"}
    | {"prometheus_client", "wsproto", "httpx", "jsonschema_specifications"}
)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except ModuleNotFoundError as e:
        if (e.name or "").partition(".")[0] not in SERVER_MODULES:
            raise
        print(
            f"telemetryd {args.command}: this needs the daemon's dependencies ({e.name} is not "
            "installed): pip install 'telemetryd[server]'",
            file=sys.stderr,
        )
        return 2
    except BrokenPipeError:
        # `telemetryd schemas list | head`: the reader left; that is not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return result


if __name__ == "__main__":
    raise SystemExit(main())
