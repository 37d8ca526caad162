"""A gunicorn config file whose workers see the fast path's internals as a later
gunicorn or gevent might leave them: the hub's ``thread_ident`` gone.

``post_fork`` runs in the worker before it loads the app, so before the worker
class's self-check.
"""

from __future__ import annotations

import typing as t


def post_fork(server: t.Any, worker: t.Any) -> None:
    from flask_sse_push.servers import _gunicorn_internals

    _gunicorn_internals.HUB_ATTRIBUTES = (*_gunicorn_internals.HUB_ATTRIBUTES, "gone")
