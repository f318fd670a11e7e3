"""The ``srtpgw`` command line.

Each subcommand is a thin front over a function in the package, so that tests and the demo call the
same code paths an operator does. Errors are one line on stderr and a non-zero exit, never a
traceback: exit 2 for a bad config or bad usage, 1 for a runtime failure.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from gateway import __version__
from gateway.config import (
    Config,
    ConfigError,
    HostPort,
    load_config,
    parse_hostport,
    read_admin_token,
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _load(path: str) -> Config:
    cfg = load_config(path)
    for warning in cfg.warnings:
        print(f"srtpgw: warning: {path}: {warning}", file=sys.stderr)
    return cfg


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.app import run
    from gateway.ops.log import capture_stray_output, get_logger, setup_logging

    cfg = load_config(args.config)
    level = args.log_level or cfg.logging.level
    setup_logging(level, cfg.logging.format, cfg.logging.file)
    capture_stray_output()  # from here on, everything goes through the structured log
    log = get_logger("config")
    for warning in cfg.warnings:
        log.warning("config.warning", file=args.config, detail=warning)
    return run(cfg)


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _load(args.file or args.config)
    print(f"{cfg.path}: OK ({len(cfg.listeners)} listeners, {len(cfg.trunks)} trunks)")
    return EXIT_OK


def cmd_keys_init(args: argparse.Namespace) -> int:
    from gateway.ops.keys import init_keys, show_keys

    keys = init_keys(args.dir, domain=args.domain, force=args.force)
    print(f"dev keys and {keys.admin_token.name} written to {keys.dir}/ "
          "(private keys and token mode 0600)")
    print(show_keys(keys.dir))
    return EXIT_OK


def cmd_keys_show(args: argparse.Namespace) -> int:
    from gateway.ops.keys import show_keys

    if not Path(args.dir).is_dir():
        print(f"srtpgw: {args.dir}: no such directory (run `srtpgw keys init`)", file=sys.stderr)
        return EXIT_FAILURE
    print(show_keys(args.dir))
    return EXIT_OK


def cmd_keys_token(args: argparse.Namespace) -> int:
    from gateway.ops.keys import ADMIN_TOKEN, write_admin_token

    Path(args.dir).mkdir(parents=True, exist_ok=True)
    path = write_admin_token(Path(args.dir) / ADMIN_TOKEN, force=args.force)
    print(f"admin token written to {path} (mode 0600); point [admin] token_file at it")
    return EXIT_OK


def cmd_keys_rotate_dtls(args: argparse.Namespace) -> int:
    from gateway.ops.keys import rotate_dtls, show_keys

    keys = rotate_dtls(args.dir, domain=args.domain)
    print("new DTLS certificate written; running gateways pick it up on reload")
    print(show_keys(keys.dir))
    return EXIT_OK


def cmd_audit(args: argparse.Namespace) -> int:
    from gateway.policy.audit import run_audit

    report, code = run_audit(_load(args.config))
    print(report)
    return code


def _admin_target(args: argparse.Namespace) -> tuple[HostPort, str | None]:
    """The admin address and token: from the config, or from --admin and --token-file."""
    if args.admin:
        token_file = Path(args.token_file) if args.token_file else None
        return parse_hostport(args.admin), (
            read_admin_token(args.token_file, token_file) if token_file else None)
    admin = load_config(args.config, check_files=False).admin
    token = read_admin_token(args.config, admin.token_file) if admin.token_file else None
    return admin.listen, token


def cmd_status(args: argparse.Namespace) -> int:
    from gateway.ops.status import main as status_main

    admin, token = _admin_target(args)
    return status_main(admin, token=token)


def cmd_reload(args: argparse.Namespace) -> int:
    from gateway.ops.status import main_reload

    admin, token = _admin_target(args)
    return main_reload(admin, token=token)


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.ops.demo import main as demo_main

    return demo_main(Path(args.workdir) if args.workdir else None)


def cmd_probe(args: argparse.Namespace) -> int:
    from gateway.tools.probe.report import exit_code, render_json, render_table
    from gateway.tools.probe.runner import ProbeOptions, run_probe
    from gateway.tools.probe.target import ScopeError, parse_endpoint, parse_host, parse_local

    try:
        opts = ProbeOptions(
            target=parse_endpoint(args.target), profile=args.profile,
            cert=Path(args.cert) if args.cert else None,
            key=Path(args.key) if args.key else None, ca=Path(args.ca) if args.ca else None,
            domain=args.domain,
            legacy_side=parse_local(args.legacy_side) if args.legacy_side else None,
            stranger_source=args.stranger_source,
            plain_sip=parse_endpoint(args.plain_sip) if args.plain_sip else None,
            media_hosts=tuple(parse_host(h) for h in args.media_host),
            extension=args.extension, number=args.number, flood=args.flood,
            max_time=args.max_time)
    except ScopeError as exc:
        print(f"srtpgw: probe: {exc}", file=sys.stderr)
        return EXIT_USAGE
    findings, meta = run_probe(opts)
    print(render_json(findings, meta) if args.json else render_table(findings, meta))
    return exit_code(findings)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="srtpgw",
        description="SIP/RTP encryption gateway: plain SIP/RTP on the legacy side, "
                    "SIP over TLS and SRTP on the secure side.",
    )
    p.add_argument("--version", action="version", version=f"srtpgw {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_: str
            ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(func=func)
        return sp

    run = add("run", cmd_run, "start the gateway in the foreground (Ctrl-C or SIGTERM stops it)")
    run.add_argument("-c", "--config", required=True, help="TOML config file")
    run.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                     help="override [logging] level")

    chk = add("check-config", cmd_check_config, "validate a config file without starting")
    chk.add_argument("file", nargs="?", help="TOML config file")
    chk.add_argument("-c", "--config", help="TOML config file (same as the positional)")

    keys = add("keys", lambda a: (keys.print_help(), EXIT_USAGE)[1],
               "make or inspect dev key material")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    for name, func, help_ in (
        ("init", cmd_keys_init, "create a dev CA, gateway, peer and DTLS certificates"),
        ("show", cmd_keys_show, "print subjects, SANs, expiry and fingerprints"),
        ("rotate-dtls", cmd_keys_rotate_dtls, "replace the persistent DTLS certificate"),
        ("token", cmd_keys_token, "create only the admin token file (for an existing key dir)"),
    ):
        kp = ksub.add_parser(name, help=help_, description=help_)
        kp.set_defaults(func=func)
        kp.add_argument("--dir", default="keys", help="key directory (default: keys)")
        if name in ("init", "rotate-dtls"):
            kp.add_argument("--domain", default="gateway.srtpgw.test",
                            help="the gateway's SIP domain (certificate names)")
        if name in ("init", "token"):
            kp.add_argument("--force", action="store_true", help="replace existing files")

    aud = add("audit", cmd_audit, "check a config against good interconnect practice")
    aud.add_argument("-c", "--config", required=True, help="TOML config file")

    for name, func, help_ in (
        ("status", cmd_status, "show active calls and key counters of a running gateway"),
        ("reload", cmd_reload, "make a running gateway re-read its config and certificates"),
    ):
        sp = add(name, func, help_)
        group = sp.add_mutually_exclusive_group(required=True)
        group.add_argument("-c", "--config", help="config file (its [admin] listen address)")
        group.add_argument("--admin", help="admin address host:port")
        sp.add_argument("--token-file", help="admin token file (with --admin; with -c the "
                        "config's [admin] token_file is used)")

    probe = add("probe", cmd_probe, "assess one SBC or trunk you name: TLS, exposure, screening, "
                "flood, media policy, RTP bleed, topology hiding (docs/probe.md)")
    probe.add_argument("target", metavar="TARGET",
                       help="TRANSPORT:HOST:PORT (udp, tcp, tls) or sip:/sips: URI with a port")
    probe.add_argument("--profile", choices=("interconnect", "pbx"), default="interconnect",
                       help="what the target claims to be (default: interconnect)")
    probe.add_argument("--cert", help="client certificate the target trusts (mutual TLS)")
    probe.add_argument("--key", help="private key of --cert")
    probe.add_argument("--ca", help="CA file to verify the target's certificate chain")
    probe.add_argument("--domain", help="the target's SIP domain (certificate SAN, R-URI host)")
    probe.add_argument("--legacy-side", metavar="ADDR",
                       help="local IP:PORT the target sends its legacy-side calls to; enables "
                            "RTP bleed and topology hiding checks")
    probe.add_argument("--stranger-source", metavar="IP",
                       help="local IP to send from as an unknown source (UDP/TCP targets)")
    probe.add_argument("--plain-sip", metavar="TARGET",
                       help="the target's non-TLS SIP listener, for the SDES-over-plain check")
    probe.add_argument("--media-host", metavar="IP", action="append", default=[],
                       help="a host the target's media lives on besides TARGET (repeatable); "
                            "the probe sends RTP nowhere else")
    probe.add_argument("--extension", help="a user known to exist, for the enumeration check")
    probe.add_argument("--number", default="probe",
                       help="the user part probe calls go to (default: probe)")
    probe.add_argument("--flood", type=int, default=300,
                       help="requests in the flood burst, at most 1000 (default: 300)")
    probe.add_argument("--max-time", type=float, default=240.0,
                       help="seconds the whole run may take (default: 240)")
    probe.add_argument("--json", action="store_true", help="print the report as JSON")

    demo = add("demo", cmd_demo, "run a loopback call legacy UA <-> gateway <-> secure UA")
    demo.add_argument("--workdir", help="directory for keys, config and logs (default: temp)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    if args.command == "check-config" and not (args.file or args.config):
        parser.error("check-config needs a config file")
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"srtpgw: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, OSError) as exc:
        name = type(exc).__name__
        print(f"srtpgw: {args.command}: {name}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
