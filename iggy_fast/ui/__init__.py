"""The web dashboard's static files (index.html, app.js, style.css), served at /ui.

The HTTP transport calls `add_routes(app)` when `[http] web_ui` is on. The page logs in over
the JSON API itself, so serving the files needs no authentication: they hold no data.
"""

from __future__ import annotations

import os

from aiohttp import web

DIRECTORY = os.path.dirname(os.path.abspath(__file__))


async def _index(request: web.Request) -> web.StreamResponse:
    if request.path == "/ui":
        raise web.HTTPFound("/ui/")     # relative links (app.js, style.css) need the slash
    return web.FileResponse(os.path.join(DIRECTORY, "index.html"),
                            headers={"cache-control": "no-cache"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ui", _index)
    app.router.add_get("/ui/", _index)
    app.router.add_static("/ui/", DIRECTORY, show_index=False, append_version=False)
