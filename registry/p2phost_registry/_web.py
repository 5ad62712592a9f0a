"""The web marketplace: server-rendered pages that work without JavaScript."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from p2phost_sdk import HOST_API, KINDS, host_api_compatible

from ._errors import NotFound
from ._readme import render_readme
from ._search import search
from ._state import registry_of

HERE = Path(__file__).parent
HTML = "text/html; charset=utf-8"
_ENV = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters["day"] = lambda iso: str(iso)[:10]


def render(template: str, **context: Any) -> bytes:
    """A rendered template as UTF-8 bytes."""
    return _ENV.get_template(template).render(kinds=KINDS, **context).encode()


async def home(request: Request) -> Response:
    """GET / : search with filters, or the newest and most downloaded plugins."""
    reg = registry_of(request)
    epoch = reg.epoch
    params = request.query_params
    q, kind, sort = params.get("q", ""), params.get("kind", ""), params.get("sort", "relevance")
    plugins = await reg.plugins()
    context: dict[str, Any] = {"q": q, "kind": kind, "sort": sort, "total": len(plugins)}
    if q or kind or "sort" in params:
        context["results"] = search(plugins, q, kind, "", sort)
    else:
        context["newest"] = search(plugins, sort="newest")[:10]
        context["popular"] = search(plugins, sort="downloads")[:10]
    return reg.cached(request, epoch, "", render("index.html", **context), HTML)


async def plugin_page(request: Request) -> Response:
    """GET /plugins/{name} and /plugins/{name}/{version}"""
    reg = registry_of(request)
    epoch = reg.epoch
    plugin = await reg.call(reg.store.plugin, request.path_params["name"])
    wanted = request.path_params.get("version")
    shown = plugin.latest()
    if wanted is not None:
        shown = plugin.version(wanted)
        if shown is None:
            raise NotFound(f"{plugin.name} has no version {wanted}")
    body = render(
        "plugin.html",
        plugin=plugin,
        shown=shown,
        readme=Markup(render_readme(shown.readme, shown.readme_type)) if shown else "",
        host_api=str(HOST_API),
        compatible=host_api_compatible(shown.host_api) if shown else False,
        base=reg.public_url,
    )
    return reg.cached(request, epoch, plugin.name, body, HTML)


def error_page(status: int, message: str) -> Response:
    """An HTML error page."""
    return Response(render("error.html", status=status, message=message), status, media_type=HTML)


ROUTES = [
    Route("/", home),
    Route("/plugins/{name}", plugin_page),
    Route("/plugins/{name}/{version}", plugin_page),
    Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
]
