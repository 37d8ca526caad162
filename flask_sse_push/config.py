"""The ``SSE_PUSH_*`` configuration keys, in one table that checks them and documents them.

:data:`KEYS` is the only place a key is written out: :meth:`SSEPush.init_app
<flask_sse_push.SSEPush.init_app>` sets each default and checks each value
through it (:func:`load`), and the table of docs/configuration.md is made from
it. Adding a key is adding a row; then regenerate the page with
``python docs/_gen_config.py`` (a test fails while the page is out of date).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Callable, MutableMapping, Sequence


@dataclasses.dataclass(frozen=True)
class Key:
    """One configuration key: its type, default, bound and one line of documentation.

    :param name: the full key, ``SSE_PUSH_...``.
    :param type: the type a value must have: ``float`` takes any ``int`` or
        ``float`` (and gives a ``float``), ``int`` only an ``int``; ``bool`` is
        never taken as a number.
    :param default: the value when the app's config has none.
    :param help: what the key does, one line of Markdown (MyST) for the docs.
    :param unit: what a number counts (``"seconds"``), for messages and docs.
    :param minimum: the least value a number may have, if any.
    :param above: the value must be greater than ``minimum``, not equal to it.
    :param optional: ``None`` is also a value (its meaning is in ``help``).
    :param check: the check of a value that is not ``None``, for what ``type``
        cannot say (instead of it): it returns the value normalised, or raises
        :class:`ValueError` that names the key and says what to write.
    """

    name: str
    type: type
    default: object
    help: str
    unit: str = ""
    minimum: float | None = None
    above: bool = False
    optional: bool = False
    check: Callable[[t.Any], t.Any] | None = None

    @property
    def expected(self) -> str:
        """What a value must be, in words: ``"a number of seconds > 0"``."""
        noun = {float: "a number", int: "an int number", bool: "True or False", str: "a str"}.get(
            self.type, f"a {self.type.__name__}"
        )
        if self.unit:
            noun = f"{noun} of {self.unit}"
        if self.minimum is not None:
            noun = f"{noun} {'>' if self.above else '>='} {self.minimum:g}"
        return f"None or {noun}" if self.optional else noun

    def validate(self, value: object) -> t.Any:
        """Return ``value`` checked (a ``float`` key gives a ``float``).

        :raises ValueError: the value has the wrong type or is out of bounds;
            the message names the key, what it takes and its default.
        """
        if value is None and self.optional:
            return None
        if self.check is not None:
            return self.check(value)
        if not self._has_type(value) or not self._in_bounds(value):
            raise ValueError(
                f"{self.name} must be {self.expected}, not {value!r}. Set"
                f" app.config[{self.name!r}] (or the environment variable {self.name}) before"
                f" init_app(), or leave it out for"
                f" the default, {self.default!r}."
            )
        return float(value) if self.type is float else value  # type: ignore[arg-type]

    def _has_type(self, value: object) -> bool:
        if self.type is float:
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.type is int:
            return isinstance(value, int) and not isinstance(value, bool)
        return isinstance(value, self.type)

    def _in_bounds(self, value: object) -> bool:
        if self.minimum is None or not isinstance(value, (int, float)):
            return True
        return value > self.minimum if self.above else value >= self.minimum


def _patterns(value: object) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
        raise ValueError(
            "SSE_PUSH_PRESENCE_EVENTS must be None or a list of channel patterns such as"
            f' ["room.*", "lobby"], not {value!r}.'
        )
    return tuple(value)


def _token(value: object) -> str:
    if not isinstance(value, str) or len(value) < 16:
        shown = "a short string" if isinstance(value, str) else repr(value)
        raise ValueError(
            "SSE_PUSH_PUBLISH_TOKEN must be None or a secret string of at least 16"
            f" characters (for example secrets.token_urlsafe(32)), not {shown}."
        )
    return value


def _server_family(value: object) -> str:
    # Imported here: the table itself needs no server code.
    from .servers import FAMILIES

    if not isinstance(value, str) or value.lower() not in FAMILIES:
        raise ValueError(
            f"SSE_PUSH_SERVER must be one of {', '.join(repr(name) for name in FAMILIES)},"
            f" not {value!r}."
        )
    return value.lower()


def _grip_urls(value: object) -> list[str]:
    # Imported here: the GRIP package needs Flask, and the table itself does not.
    from .grip.mode import proxy_urls

    return proxy_urls(value)


def _origins(value: object) -> list[str]:
    # Imported here: cors.py needs Flask, and the table itself does not.
    from .cors import check_origins

    origins = check_origins(value)
    assert origins is not None  # None is handled by Key.optional
    return origins


#: Every key :meth:`SSEPush.init_app <flask_sse_push.SSEPush.init_app>` reads, in
#: the order the docs list them.
KEYS: tuple[Key, ...] = (
    Key(
        "SSE_PUSH_BROKER_URL",
        str,
        None,
        help="`None`: in-process broker; `redis://host:port/db`: Redis, connecting with a 3 s"
        " timeout (up to three attempts) and waiting at most 5 s for an answer (pass"
        " `RedisBroker.from_url(connect_timeout=..., socket_timeout=...)` as `broker=` to"
        " change them); `redis+cluster://host:port[,host:port...]` (or"
        " `rediss+cluster://`): a Redis Cluster 7.0+ with the same timeouts, see"
        " [Redis Cluster](scaling.md#redis-cluster)",
        optional=True,
    ),
    Key("SSE_PUSH_URL_PREFIX", str, "/events", help="where the stream endpoint is mounted"),
    Key(
        "SSE_PUSH_KEEPALIVE",
        float,
        15.0,
        help="seconds of quiet before a `: keepalive` comment",
        unit="seconds",
        minimum=0,
        above=True,
    ),
    Key(
        "SSE_PUSH_RETRY",
        int,
        None,
        help="milliseconds sent as `retry:` when a stream opens; `None` sends none",
        unit="milliseconds",
        minimum=0,
        optional=True,
    ),
    Key(
        "SSE_PUSH_HISTORY",
        int,
        1000,
        help="events kept per channel for replay; the in-memory broker frees a channel with no"
        " subscribers and nothing in its history, and answers an older cursor for it"
        " with `reset`",
        unit="events",
        minimum=0,
    ),
    Key(
        "SSE_PUSH_REPLAY_MAX_EVENTS",
        int,
        1000,
        help="events one resume replays at most; a client further behind gets the oldest"
        " events that fit, then a `reset` with reason `budget` (see"
        " [the replay budget](reconnect.md#the-replay-budget))",
        unit="events",
        minimum=1,
    ),
    Key(
        "SSE_PUSH_REPLAY_MAX_BYTES",
        int,
        1 << 20,
        help="wire bytes one resume replays at most, with the same end as"
        " `SSE_PUSH_REPLAY_MAX_EVENTS`",
        unit="bytes",
        minimum=1,
    ),
    Key(
        "SSE_PUSH_QUEUE_SIZE",
        int,
        1000,
        help="events a client may fall behind by before it is disconnected (it then resumes"
        " through the replay)",
        unit="events",
        minimum=1,
    ),
    Key("SSE_PUSH_REDIS_PREFIX", str, "sse:", help="namespace of every Redis key and channel"),
    Key(
        "SSE_PUSH_SEND_TIMEOUT",
        float,
        30.0,
        help="seconds a write may go without progress (one 64 KiB piece not taken) before the"
        " connection is cut; a slow but steady client is never cut. A peer that"
        " acknowledges nothing for keepalive + this is dropped, and that sum is set as"
        " `TCP_USER_TIMEOUT` (Linux). Enforced where the server exposes the socket"
        " (gunicorn, `flask run`)",
        unit="seconds",
        minimum=0,
        above=True,
    ),
    Key(
        "SSE_PUSH_MAX_LIFETIME",
        float,
        600.0,
        help="a channel stream ends after 80–100 % of this (at random) with `retry:`, and the"
        " client resumes, maybe on another worker; `None` turns it off. Streams of"
        " `sse.stream()` are never cut, as only the application knows how to resume them",
        unit="seconds",
        minimum=0,
        above=True,
        optional=True,
    ),
    Key(
        "SSE_PUSH_MAX_CONNECTIONS",
        int,
        None,
        help="streams per worker; beyond it, `200` + `retry:` + end. `None`: what the server"
        " holds while ordinary requests get through (gevent worker: `worker_connections`"
        " less a tenth, at most 100; threaded: threads less a quarter, at least one kept;"
        " `flask run`: no limit; see {ref}`threaded-servers`)",
        unit="streams",
        minimum=1,
        optional=True,
    ),
    Key(
        "SSE_PUSH_MAX_STREAMS_PER_CLIENT",
        int,
        None,
        help="streams one client may hold at once in a worker; beyond it, the same answer as a"
        " full worker. A client is what `identify` returns, else its address"
        " (`request.remote_addr`; behind a proxy, see"
        " [Per-client limit](deploying.md#per-client-limit)). `None`: 16, at most half of"
        " what the worker holds, at least 1 (gthread with 8 threads: 3); a large number"
        " turns it off",
        unit="streams",
        minimum=1,
        optional=True,
    ),
    Key(
        "SSE_PUSH_CORS_ORIGINS",
        list,
        None,
        help='origins such as `["https://app.example.com"]` allowed to stream with credentials'
        " from another site (needs the `cors` extra); others get `403`",
        optional=True,
        check=_origins,
    ),
    Key(
        "SSE_PUSH_PRESENCE_TTL",
        float,
        15.0,
        help="seconds a worker's record of who is connected to it (and of its stats) outlives"
        " the worker on a shared broker; renewed every third of that, so a worker killed"
        " outright drops out of `sse.presence()` within this time",
        unit="seconds",
        minimum=0,
        above=True,
    ),
    Key(
        "SSE_PUSH_PRESENCE_EVENTS",
        list,
        None,
        help='channel patterns (`fnmatch`, such as `["room.*"]`) whose clients get a'
        " `flask-sse-push:join` event when a stream of the channel opens and"
        ' `flask-sse-push:leave` when one closes, with data `{"identity": ...}`',
        optional=True,
        check=_patterns,
    ),
    Key(
        "SSE_PUSH_PUBLISH_TOKEN",
        str,
        None,
        help="a secret of at least 16 characters that turns on `POST <prefix>/publish` for"
        " clients sending it as `Authorization: Bearer <token>` (see"
        " [From any language](publishing.md#from-any-language-post-eventspublish))",
        optional=True,
        check=_token,
    ),
    Key(
        "SSE_PUSH_PUBLISH_MAX_BYTES",
        int,
        1 << 20,
        help="the largest body `POST <prefix>/publish` reads; larger ones get `413`",
        unit="bytes",
        minimum=1,
    ),
    Key(
        "SSE_PUSH_SERVER",
        str,
        "detect",
        help="the server family that carries the streams: `detect` (the default) finds it from"
        " the WSGI environ and the process; or `gunicorn`, `uwsgi`, `granian`, `waitress`,"
        " `werkzeug` (`flask run`), `gevent`, `plain`. One INFO line at startup names the"
        " server and the capacity chosen (see [Deploying](deploying.md))",
        check=_server_family,
    ),
    Key(
        "SSE_PUSH_GRIP_URL",
        list,
        None,
        help="the publish endpoint of a GRIP proxy (Pushpin: `http://127.0.0.1:5561`), or a"
        " list (or comma-separated string) of them: turns GRIP mode on, where the proxy holds"
        " the streams (needs the Redis broker and the `grip` extra; see"
        " [Behind Pushpin or Fastly Fanout](grip.md))",
        optional=True,
        check=_grip_urls,
    ),
    Key(
        "SSE_PUSH_GRIP_KEY",
        str,
        None,
        help="the key that verifies the proxy's `Grip-Sig` header: Pushpin's `sig_key` (at"
        " least 32 bytes), or Fastly Fanout's public key (PEM); needed with"
        " `SSE_PUSH_GRIP_URL`",
        optional=True,
    ),
    Key(
        "SSE_PUSH_GRIP_REQUIRED",
        bool,
        False,
        help="in GRIP mode, refuse (`403`) stream requests that did not come through the proxy"
        " (no valid `Grip-Sig`) instead of serving them directly",
    ),
    Key(
        "SSE_PUSH_PROMETHEUS",
        bool,
        False,
        help="also export the `stats()` counters through `prometheus_client` (needs the"
        " `metrics` extra)",
    ),
    Key(
        "SSE_PUSH_DIRECT_WRITES",
        bool,
        True,
        help="under `-k flask_sse_push.servers.gunicorn.GeventWorker`, write events to waiting"
        " streams from the fan-out itself, through the worker's own framing and byte"
        " count (see [Direct writes](deploying.md#direct-writes)). A body wrapped by a"
        " middleware, and every other server, takes the ordinary path on its own",
    ),
)


logger = logging.getLogger("flask_sse_push")


def from_environment(name: str, default: object) -> object:
    """The value of the environment variable ``name``, else ``default``.

    Read as Flask's ``Config.from_prefixed_env`` reads values: as JSON where it
    parses (``0.5``, ``true``, ``null``, ``["a", "b"]``), else as the text.
    """
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    logger.info("%s is taken from the environment.", name)
    return value


def load(config: MutableMapping[str, t.Any], keys: Sequence[Key] = KEYS) -> dict[str, t.Any]:
    """Set each key the app's config lacks, from the environment variable of the
    same name if there is one (see :func:`from_environment`), else to its
    default; return every value checked.

    :param config: the app's config (``app.config``); keys it has are left as they are.
    :returns: key name -> checked value (numbers of seconds as ``float``,
        ``SSE_PUSH_CORS_ORIGINS`` normalised to ``list[str]``).
    :raises ValueError: a value has the wrong type or is out of bounds; the
        message names the key and what it takes.
    """
    values = {}
    for key in keys:
        if key.name not in config:
            config[key.name] = from_environment(key.name, key.default)
        values[key.name] = key.validate(config[key.name])
    return values


# The generated part of docs/configuration.md lies between these two lines.
BEGIN = (
    "<!-- Generated from flask_sse_push/config.py by python docs/_gen_config.py:"
    " edit the table there. -->"
)
END = "<!-- End of the generated table. -->"


def _default_text(value: object) -> str:
    return f'`"{value}"`' if isinstance(value, str) else f"`{value!r}`"


def _type_text(key: Key) -> str:
    text = key.expected
    if key.type is list:
        text = "None or a list of origins" if key.optional else "a list of origins"
    return text.replace("None", "`None`").replace("True or False", "`True` or `False`")


def markdown_table(keys: Sequence[Key] = KEYS) -> str:
    """The Markdown table of ``keys``: name, type and bound, default, meaning."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key in keys:
        cells = [f"`{key.name}`", _type_text(key), _default_text(key.default), key.help]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def update_page(text: str, keys: Sequence[Key] = KEYS) -> str:
    """Return the page ``text`` with the part between :data:`BEGIN` and :data:`END`
    replaced by :func:`markdown_table`.

    :raises ValueError: the page lacks either marker line.
    """
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the page has no {BEGIN!r} ... {END!r} section to fill in")
    first = text.index("\n", start) + 1
    return text[:first] + "\n" + markdown_table(keys) + "\n" + text[end:]
