"""One page: a Jinja2 template with the signed-in key, its CSRF token and the headers every page carries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates

from atelier.api.ui.session import csrf_token

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")


def render(request: Request, name: str, key: Any = None, status_code: int = 200, **context: Any):  # noqa: ANN201
    context |= {"key": key, "csrf": csrf_token(request), "is_admin": bool(key and "admin" in key.scopes)}
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    # Pages show what a signed-in key may see: never from a shared cache, never framed by another site.
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data: http: https:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'"
    )
    return response
