"""`iggy-fast certs generate`: a private CA and a server certificate for TLS (iggy_fast/certs.py)."""

from __future__ import annotations

import os
import sys

DEFAULT_HOSTS = ["localhost", "127.0.0.1"]


def _generate(args) -> int:
    from iggy_fast.certs import SERVER_DAYS, generate

    hosts = args.host or DEFAULT_HOSTS
    try:
        # Absolute paths: the lines printed below are to be used from anywhere.
        made = generate(os.path.abspath(args.out), hosts, args.days or SERVER_DAYS)
    except (OSError, ValueError) as e:
        print(f"iggy-fast: cannot generate certificates in {args.out}: {e}", file=sys.stderr)
        return 2
    print(f"{'kept the CA in' if made.ca_reused else 'wrote a new CA:'} {made.ca_cert} "
          f"(key {made.ca_key})")
    print(f"wrote the server certificate {made.server_cert} (key {made.server_key}) "
          f"for {', '.join(hosts)}")
    print("serve with it, e.g. over TCP (likewise IGGY_WEBSOCKET_TLS_*, IGGY_HTTP_TLS_*, "
          "IGGY_QUIC_CERTIFICATE_*):")
    print(f"  IGGY_TCP_TLS_ENABLED=true IGGY_TCP_TLS_CERT_FILE={made.server_cert} "
          f"IGGY_TCP_TLS_KEY_FILE={made.server_key}")
    print("clients trust the CA, e.g. the SDK: "
          f"iggy+tcp://USER:PASSWORD@127.0.0.1:8090?tls=true&tls_domain={hosts[0]}"
          f"&tls_ca_file={made.ca_cert}")
    return 0


def add_parser(sub) -> None:
    certs = sub.add_parser("certs", help="make TLS certificates")
    actions = certs.add_subparsers(dest="certs_command", required=True)
    gen = actions.add_parser(
        "generate", help="write a CA and a server certificate it signs",
        description="Write ca_cert.pem, ca_key.pem, server_cert.pem and server_key.pem in "
        "--out (keys 0600). A directory that has a CA already keeps it and only gets a new "
        "server certificate.")
    gen.add_argument("--out", required=True, help="directory to write the files in")
    gen.add_argument("--host", action="append",
                     help="a name or IP address the server is reached by (repeatable; "
                     f"default {' and '.join(DEFAULT_HOSTS)})")
    gen.add_argument("--days", type=int, help="validity of the server certificate in days "
                     "(default 397)")
    gen.set_defaults(func=_generate)
