"""``python -m flywheel_devkit.kafka``: start, stop, restart and inspect a local broker."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from .broker import LocalKafka
from .maven import KAFKA_VERSION, KafkaStartError, _say, default_data_dir
from .security import (
    SCRAM_MECHANISM,
    KafkaSecurity,
    parse_scram_user,
)


def _build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="broker data directory (default: ./.flywheel/kafka); survives restarts",
    )
    common.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="jar cache (default: $FLYWHEEL_KAFKA_CACHE or ~/.cache/flywheel/kafka)",
    )
    starting = argparse.ArgumentParser(add_help=False)
    starting.add_argument(
        "--port",
        type=int,
        default=None,
        help="client port on 127.0.0.1 (default: last used for this data dir, else 9092; "
        "0 = any free port)",
    )
    starting.add_argument(
        "--controller-port",
        type=int,
        default=None,
        help="KRaft controller port (default: any free port)",
    )
    starting.add_argument(
        "--timeout", type=float, default=90.0, help="seconds to wait for readiness (default 90)"
    )
    starting.add_argument(
        "--foreground",
        action="store_true",
        help="stay attached; Ctrl-C / SIGTERM stops the broker",
    )
    secure = starting.add_argument_group(
        "security (default: PLAINTEXT; applies to this start only, repeat it on restart)"
    )
    secure.add_argument(
        "--sasl-scram",
        action="append",
        type=_scram_arg,
        default=[],
        metavar="USER:PASSWORD",
        help=f"require SASL/{SCRAM_MECHANISM} on the client listener and create this user "
        "(repeatable). Users are created when the data dir is first started: a data dir "
        "keeps its first set. Passwords: no commas, quotes, backslashes or blanks",
    )
    secure.add_argument(
        "--tls",
        action="store_true",
        help="TLS on the client listener, with a certificate for 127.0.0.1/localhost from a "
        "throwaway CA generated in <data-dir>/security/ (kept across restarts); clients "
        "verify with <data-dir>/security/ca.pem. With --sasl-scram: SASL_SSL",
    )

    parser = argparse.ArgumentParser(
        prog="python -m flywheel_devkit.kafka",
        description=(
            f"Local single-node Apache Kafka {KAFKA_VERSION} (KRaft) for development and "
            "tests, without Docker. Needs Java 17+; the first start fetches the jars "
            "with Maven. `start` prints the bootstrap address on stdout when ready."
        ),
        epilog=(
            "examples:\n"
            "  python -m flywheel_devkit.kafka start              # 127.0.0.1:9092, detached\n"
            "  python -m flywheel_devkit.kafka start --foreground # Ctrl-C stops it\n"
            "  export KAFKA=$(python -m flywheel_devkit.kafka start --port 0)\n"
            "  python -m flywheel_devkit.kafka start --sasl-scram alice:s3cret --tls\n"
            "      # SASL_SSL; it prints the FLYWHEEL_KAFKA_* variables services need\n"
            "  python -m flywheel_devkit.kafka status; python -m flywheel_devkit.kafka stop\n"
            "data (topics, offsets, cluster id) lives in --data-dir and survives restarts;\n"
            "the broker log is <data-dir>/broker.log."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser(
        "start", parents=[common, starting], help="start the broker and wait until it is ready"
    )
    sub.add_parser("stop", parents=[common], help="stop the broker of the data dir")
    sub.add_parser(
        "status",
        parents=[common],
        help="print whether the broker runs (exit 0 ready, 1 starting/unready, 3 stopped)",
    )
    sub.add_parser("restart", parents=[common, starting], help="stop, then start")
    return parser


def _scram_arg(text: str) -> tuple[str, str]:
    try:
        return parse_scram_user(text)
    except ValueError as exc:  # argparse would print the value, password included
        raise argparse.ArgumentTypeError(str(exc)) from None


def _security_from_args(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> KafkaSecurity | None:
    users: dict[str, str] = {}
    for name, password in getattr(args, "sasl_scram", None) or []:
        if name in users:
            parser.error(f"argument --sasl-scram: user {name!r} given twice")
        users[name] = password
    tls = bool(getattr(args, "tls", False))
    return KafkaSecurity(users, tls=tls) if users or tls else None


def _say_security(kafka: LocalKafka) -> None:
    env = kafka.client_env()
    if "FLYWHEEL_KAFKA_SASL_PASSWORD" in env:
        env["FLYWHEEL_KAFKA_SASL_PASSWORD"] = f"<password of {env['FLYWHEEL_KAFKA_SASL_USERNAME']}>"
    users = sorted(kafka.security.scram_users) if kafka.security is not None else []
    _say(
        f"client listener: {kafka.security_protocol}"
        + (f" ({SCRAM_MECHANISM}; users: {', '.join(users)})" if users else "")
        + (f"; CA: {kafka.ca_file}" if kafka.ca_file else "")
    )
    _say("services take: " + " ".join(f"{k}={v}" for k, v in env.items()))


def _run_foreground(kafka: LocalKafka) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    _say(f"broker running (pid {kafka.pid}); Ctrl-C to stop. Log: {kafka.broker_log}")
    try:
        while not stop.wait(0.5):
            if not kafka.is_running():
                _say("broker exited unexpectedly")
                print(kafka.log_tail(), file=sys.stderr)
                return 1
    finally:
        if kafka.is_running():
            _say("stopping broker…")
            kafka.stop()
            _say("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m flywheel_devkit.kafka``."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    security = _security_from_args(parser, args)
    data_dir = args.data_dir or default_data_dir()
    port = getattr(args, "port", None)
    kafka = LocalKafka(
        data_dir,
        port=port,
        controller_port=getattr(args, "controller_port", None),
        cache_dir=args.cache_dir,
        security=security,
    )
    try:
        if args.command == "status":
            if not kafka.is_running():
                print(f"stopped (data dir {kafka.data_dir})")
                return 3
            ready = kafka.is_ready()
            protocol = kafka.security_protocol
            print(
                f"{'ready' if ready else 'running, not answering'}: bootstrap={kafka.bootstrap} "
                f"pid={kafka.pid} data_dir={kafka.data_dir}"
                + (f" security={protocol} ca={kafka.ca_file}" if protocol != "PLAINTEXT" else "")
            )
            return 0 if ready else 1
        if args.command == "stop":
            if kafka.stop():
                _say(f"stopped broker of {kafka.data_dir}")
            else:
                _say(f"no broker running for {kafka.data_dir}")
            return 0

        if args.command == "restart":
            kafka.stop()
        elif kafka.is_running():
            _say(f"already running (pid {kafka.pid})")
        began = time.monotonic()
        kafka.start(timeout=args.timeout)
        _say(
            f"Kafka {KAFKA_VERSION} ready at {kafka.bootstrap} in "
            f"{time.monotonic() - began:.1f}s (data {kafka.data_dir})"
        )
        if kafka.security_protocol != "PLAINTEXT":
            _say_security(kafka)
        print(kafka.bootstrap, flush=True)
        if args.foreground:
            return _run_foreground(kafka)
        return 0
    except KafkaStartError as exc:
        _say(f"error: {exc}")
        return 2
