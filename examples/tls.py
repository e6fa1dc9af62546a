"""TLS: the same client over an encrypted connection.

Start a server with TLS on its TCP listener (a self-signed certificate is made when none is
configured):

    IGGY_TCP_TLS_ENABLED=true iggy-fast server --with-default-root-credentials
    python examples/tls.py [--address 127.0.0.1:8090] [--ca-file ca.pem] [--domain localhost]

With `--ca-file` the server's certificate is verified against that CA (and its name against
`--domain`); without it the connection is encrypted but the certificate is not checked, which
is fine on loopback and nowhere else.
"""

import asyncio
from urllib.parse import quote

from _common import arguments, fresh_stream, url
from iggy_fast.client import IggyClient, PollingStrategy

STREAM, TOPIC = "example-tls", "secure"


async def main(args) -> None:
    query = "tls=true"
    if args.ca_file:
        query += f"&tls_ca_file={quote(args.ca_file)}&tls_domain={quote(args.domain)}"
    async with IggyClient(url(args, query)) as client:
        await fresh_stream(client, STREAM)
        await client.create_topic(STREAM, TOPIC)
        await client.send_messages(STREAM, TOPIC, 0, [b"sent over TLS"])
        polled = await client.poll_messages(STREAM, TOPIC, partition_id=0,
                                            polling_strategy=PollingStrategy.First(), count=1)
        message = next(iter(polled))
        verified = "verified against " + args.ca_file if args.ca_file else "not verified"
        print(f"TLS connection to {client.address} (certificate {verified})")
        print(f"read back: {bytes(message.payload).decode()}")
        await client.delete_stream(STREAM)


if __name__ == "__main__":
    asyncio.run(main(arguments(__doc__.splitlines()[0],
                               ca_file=(None, "CA certificate (PEM) to verify the server"),
                               domain=("localhost", "name the certificate must carry"))))
