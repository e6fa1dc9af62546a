"""Token authentication: log in once with a password, then with a personal access token.

The password login creates a token (its secret is shown once); a second client connects with
the token in place of user and password (`iggy://TOKEN@host:port`) and works as that user.
Finally the token is deleted, and a login with it is refused.

    python examples/token_auth.py [--address 127.0.0.1:8090]
"""

import asyncio
from datetime import timedelta

from _common import arguments, url
from iggy_fast.client import IggyClient
from iggy_fast.protocol.errors import IggyError

TOKEN_NAME = "example-token"


async def main(args) -> None:
    async with IggyClient(url(args)) as admin:
        try:
            await admin.delete_personal_access_token(TOKEN_NAME)
        except IggyError:
            pass                                # none left from an earlier run
        token = (await admin.create_personal_access_token(
            TOKEN_NAME, expiry=timedelta(hours=1))).token
        print(f"created token {TOKEN_NAME!r} ({len(token)} characters, shown only once)")
        async with IggyClient(f"iggy://{token}@{args.address}") as client:
            me = await client.get_me()
            print(f"logged in with the token as user {me.user_id}; "
                  f"{len(await client.get_streams())} streams visible")
        await admin.delete_personal_access_token(TOKEN_NAME)
        try:
            async with IggyClient(f"iggy://{token}@{args.address}", reconnection_retries=0):
                raise SystemExit("a deleted token was still accepted")
        except IggyError as e:
            print(f"after deleting it, the token is refused: {type(e).__name__}")


if __name__ == "__main__":
    asyncio.run(main(arguments(__doc__.splitlines()[0])))
