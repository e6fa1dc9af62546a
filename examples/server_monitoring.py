"""Server-side monitoring: messages per second per topic, as the server counts them, printed
every second (the server's own rates over the last second, from `GET /stats/rates`).

Unlike monitoring.py, which measures what one client sends and receives, this watches every
producer and consumer at once. It logs in over HTTP (the JSON API) and needs the read_servers
permission. Runs for `--seconds` (default: until Ctrl-C).

    python examples/server_monitoring.py [--http-address 127.0.0.1:3000] [--seconds 10]
"""

import json
import time
import urllib.request

from _common import arguments


def call(base: str, method: str, path: str, body=None, token=None):
    request = urllib.request.Request(
        base + path, method=method, data=json.dumps(body).encode() if body else None,
        headers={"content-type": "application/json",
                 **({"authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read() or b"null")


def main(args) -> None:
    base = f"http://{args.http_address}"
    token = call(base, "POST", "/users/login", {"username": args.username,
                                                "password": args.password})
    token = token["access_token"]["token"]
    until = time.monotonic() + args.seconds if args.seconds > 0 else float("inf")
    while time.monotonic() < until:
        doc = call(base, "GET", "/stats/rates", token=token)
        line = [f"{t['stream']}/{t['topic']}: in {t['rates']['1s']['messages_in']:,.0f} msg/s, "
                f"out {t['rates']['1s']['messages_out']:,.0f} msg/s"
                for t in doc["topics"]]
        print(time.strftime("%H:%M:%S"), "; ".join(line) or "no topics", flush=True)
        time.sleep(1)


if __name__ == "__main__":
    main(arguments(__doc__.splitlines()[0],
                   http_address=("127.0.0.1:3000", "the server's HTTP address"),
                   seconds=(0.0, "stop after this many seconds (0: run until Ctrl-C)")))
