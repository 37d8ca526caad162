"""An app that sets no ``SSE_PUSH_*`` key itself, as a new user writes one.

Whatever it gets comes from the environment of the process that loads it.
"""

from __future__ import annotations

from flask import Flask

from flask_sse_push import SSEPush

app = Flask(__name__)
SSEPush(app)
