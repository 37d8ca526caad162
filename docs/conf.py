"""Sphinx configuration for the Flask-SSE-Push documentation.

Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (after
``pip install -e '.[docs]'``). The build needs no network: intersphinx links to
Python, Flask, Werkzeug, redis-py and gevent are made only from inventories that
are reachable, see ``_intersphinx_mapping`` below.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import os
import sys
import typing as t
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import flask_sse_push  # noqa: E402

#: Optional dependencies some documented modules import (the gevent, redis,
#: metrics and cors extras, and pytest for the test fixture). The docs extra
#: installs none of them: those that are missing are stood in for by autodoc's
#: mocks, here and in this file's own look-ups (see ``_mocked``).
_OPTIONAL = ["gevent", "greenlet", "gunicorn", "redis", "pytest", "prometheus_client", "flask_cors"]
autodoc_mock_imports = [name for name in _OPTIONAL if importlib.util.find_spec(name) is None]


@contextlib.contextmanager
def _mocked() -> t.Iterator[None]:
    """Import documented modules as autodoc does, with the missing extras mocked."""
    from sphinx.ext.autodoc.mock import mock

    with mock(autodoc_mock_imports):
        yield


project = "Flask-SSE-Push"
author = "The Flask-SSE-Push developers"
copyright = "the Flask-SSE-Push developers"
release = flask_sse_push.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
html_theme = "furo"
html_title = f"Flask-SSE-Push {release}"
html_static_path: list[str] = []

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_default_options = {"show-inheritance": True}

# Every reference to a name of ours must resolve: a broken one fails the build.
nitpicky = True

#: Inventories other projects publish, by intersphinx name.
_INVENTORIES = {
    "python": "https://docs.python.org/3/",
    "flask": "https://flask.palletsprojects.com/en/stable/",
    "werkzeug": "https://werkzeug.palletsprojects.com/en/stable/",
    "redis": "https://redis.readthedocs.io/en/stable/",
    "gevent": "https://www.gevent.org/",
}

#: The modules each inventory documents, for ``nitpick_ignore_regex`` when the
#: inventory is not loaded.
_MODULES = {
    "python": r"(typing|t|collections|abc|types|json|threading|socket|queue|logging"
    r"|datetime|enum|dataclasses|contextlib|builtins|_io|io|re|os|pathlib|uuid)",
    "flask": r"(flask|click)",
    "werkzeug": r"werkzeug",
    "redis": r"redis",
    "gevent": r"(gevent|greenlet)",
}


def _intersphinx_mapping() -> dict[str, tuple[str, str | None]]:
    """The inventories this build can reach without guessing at the network.

    A file ``docs/_inventories/<name>.inv`` (an ``objects.inv``) is used when
    present. With ``SSE_PUSH_DOCS_ONLINE=1`` (for a hosted build) the rest are
    fetched from their sites. Otherwise they are left out, so an offline
    ``-W`` build cannot fail on an unreachable site.
    """
    online = os.environ.get("SSE_PUSH_DOCS_ONLINE") == "1"
    mapping: dict[str, tuple[str, str | None]] = {}
    for name, url in _INVENTORIES.items():
        local = HERE / "_inventories" / f"{name}.inv"
        if local.is_file():
            mapping[name] = (url, str(local))
        elif online:
            mapping[name] = (url, None)
    return mapping


intersphinx_mapping = _intersphinx_mapping()
intersphinx_timeout = 10

# References to other projects' names resolve only through their inventories;
# without one, leave them as plain text rather than failing the build.
nitpick_ignore_regex = [
    (r"py:.*", rf"{_MODULES[name]}(\..*)?")
    for name in _INVENTORIES
    if name not in intersphinx_mapping
]
nitpick_ignore_regex += (
    [
        # Builtins named in annotations are documented by Python's inventory only.
        (r"py:class", r"(str|int|float|bool|bytes|object|None|type|dict|list|tuple|set)"),
        (r"py:.*", r"(Iterator|Iterable|Mapping|Sequence|Callable|Any|TracebackType|Self)"),
        (r"py:data", r"(typing\.)?(Any|Callable)"),
        # Type variables and aliases that live only under ``if TYPE_CHECKING``.
        (r"py:class", r"(flask_sse_push\.)?(.*\.)?_[A-Za-z]+"),
        (r"py:class", r"(flask_sse_push\.stream\.)?StreamItem"),
        (r"py:class", r"TestResponse|FlaskClient|Flask|Response|Redis|ResponseReturnValue"),
        (r"py:class", r"NoneType"),
    ]
    if "python" not in intersphinx_mapping
    else []
)

# Internals that public docstrings mention by name but the reference does not
# document: they render as plain text. Anything here is not public API.
nitpick_ignore_regex += [
    (r"py:(func|data)", r"flask_sse_push\.(data\.encode_data|stream\.STOP_ID)"),
    (r"py:func", r"(flask_sse_push\.validation\.)?decode_header_cursor"),
    # Private modules (brokers/redis/_scripts, brokers/redis/cluster/_cursor, ...).
    (r"py:mod", r"\.*(flask_sse_push\.(.*\.)?)?_\w+"),
    (r"py:class", r"(flask_sse_push\.brokers\.redis\.)?(Key|Snapshot)"),
    (r"py:class", r"(flask_sse_push\.metrics\.)?Metrics"),
    (r"py:class", r"(flask_sse_push\.servers\.fastpath\.)?(DirectWriter|Carrier)"),
    # The type variable of the generic ParkingLot, shown among its bases.
    (r"py:obj", r"flask_sse_push\.brokers\.handoff\._R"),
    # gunicorn's own classes, the bases of the worker class.
    (r"py:class", r"gunicorn\..*"),
    (r"py:class", r"(flask_sse_push\.brokers\.redis\.cluster\._cursor\.)?ChannelRead"),
    # redis-py's cluster client, named by its short name in annotations.
    (r"py:class", r"RedisCluster"),
]


#: Modules whose ``__all__`` is public API.
PUBLIC_MODULES = ["flask_sse_push", "flask_sse_push.testing"]

#: The other public names: what the broker contract names, the checks the docs
#: invite users to run, the brokers users construct themselves, the worker class
#: users name with ``-k`` and the pytest fixture.
PUBLIC_NAMES = [
    "flask_sse_push.brokers.base.reset_event",
    "flask_sse_push.brokers.base.RESET_EVENT",
    "flask_sse_push.brokers.handoff.Consumer",
    "flask_sse_push.brokers.redis_cluster.RedisClusterBroker",
    "flask_sse_push.validation.check_published_event",
    "flask_sse_push.validation.check_published_id",
    "flask_sse_push.validation.INVALID_CURSOR",
    "flask_sse_push.validation.MAX_EVENT_ID_LENGTH",
    "flask_sse_push.validation.RESERVED_ID_PREFIX",
    "flask_sse_push.validation.RESERVED_EVENT_TYPES",
    "flask_sse_push.validation.RESERVED_EVENT_PREFIX",
    "flask_sse_push.validation.RESERVED_CHANNEL_PREFIX",
    "flask_sse_push.brokers.records.WorkerRecords",
    "flask_sse_push.brokers.ReplayBudget",
    "flask_sse_push.servers.gunicorn.GeventWorker",
    "flask_sse_push.pytest_plugin.sse_stream",
]


def _public_names() -> dict[str, str]:
    """Every public name (as exported) and the name it is defined under."""
    names: dict[str, str] = {}
    with _mocked():
        for module_name in PUBLIC_MODULES:
            module = importlib.import_module(module_name)
            for name in module.__all__:
                names[f"{module_name}.{name}"] = _home(getattr(module, name), module_name, name)
        for path in PUBLIC_NAMES:
            module_name, _, name = path.rpartition(".")
            value = getattr(importlib.import_module(module_name), name)
            names[path] = _home(value, module_name, name)
    return names


def _home(value: object, module_name: str, name: str) -> str:
    """Where ``value`` is defined: a re-export counts as documented there too."""
    if not isinstance(value, type) and not inspect.isroutine(value):
        return f"{module_name}.{name}"  # data: named by its place only
    home = getattr(value, "__module__", module_name)
    return f"{home}.{getattr(value, '__qualname__', name)}"


def _check_the_reference_is_the_public_api(app: t.Any, exception: Exception | None) -> None:
    """Warn (an error under ``-W``) for a public name the reference lacks, and for
    a name it documents that is not public (an internal users would start to use)."""
    if exception is not None:
        return
    from sphinx.util import logging

    log = logging.getLogger(__name__)
    documented = set(app.env.get_domain("py").objects)
    public = _public_names()
    for exported, defined in sorted(public.items()):
        if exported not in documented and defined not in documented:
            log.warning("%s is public but not in the API reference (docs/api.rst)", exported)
    allowed = {*PUBLIC_MODULES, *public, *public.values()}
    for name in sorted(documented):
        owner = name
        while owner and owner not in allowed:
            owner = owner.rpartition(".")[0]
        if not owner or (owner in PUBLIC_MODULES and name != owner):
            log.warning(
                "%s is in the API reference (docs/api.rst) but is not public: remove it,"
                " or make it public (__all__, or PUBLIC_NAMES in docs/conf.py)",
                name,
            )


def _lookup(path: str) -> tuple[object, str] | None:
    """Return ``(owner, attribute)`` for a dotted path, or ``None``.

    Attributes are named by their owner and name, not their value: two
    attributes that hold the same value (``None``) are different things.
    """
    parts = path.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            with _mocked():
                owner: object = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for name in parts[split:-1]:
                owner = getattr(owner, name)
        except AttributeError:
            return None
        if not hasattr(owner, parts[-1]):
            return None
        value = getattr(owner, parts[-1])
        if isinstance(value, type) or inspect.isroutine(value) or inspect.ismodule(value):
            return value, ""
        # Inherited: name it where it is defined.
        for base in getattr(owner, "__mro__", ()):
            if parts[-1] in vars(base):
                return base, parts[-1]
        return owner, parts[-1]
    return None


def _resolve_by_object(app: t.Any, env: t.Any, node: t.Any, contnode: t.Any) -> t.Any:
    """Resolve a reference written relative to where a name is *defined* (as
    docstrings are) to the place the API reference documents it (often the
    public re-export, such as ``flask_sse_push.Broker`` for
    ``flask_sse_push.brokers.base.Broker``)."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    module = node.get("py:module") or ""
    klass = node.get("py:class") or ""
    # Docstrings also name public objects their module imports only for type
    # checking (``Subscription.get`` in exceptions.py): try the package too.
    candidates = [target, f"flask_sse_push.{target}"]
    if module:
        candidates += [f"{module}.{target}", f"{module}.{klass}.{target}" if klass else ""]
    # A docstring of a re-exported class speaks from the module defining it.
    context = _lookup(f"{module}.{klass}") if module and klass else None
    if context is not None and isinstance(context[0], type):
        candidates.append(f"{context[0].__module__}.{target}")
    domain = env.get_domain("py")
    index = env.temp_data.setdefault("_sse_push_objects", None)
    if index is None:
        index = {}
        for name in domain.objects:
            found = _lookup(name)
            if found is not None:
                index.setdefault((id(found[0]), found[1]), name)
        env.temp_data["_sse_push_objects"] = index
    for candidate in filter(None, candidates):
        found = _lookup(candidate)
        if found is None:
            continue
        documented = index.get((id(found[0]), found[1]))
        if documented is not None:
            return domain.resolve_xref(
                env, node["refdoc"], app.builder, node["reftype"], documented, node, contnode
            )
    return None


def setup(app: t.Any) -> None:
    app.connect("missing-reference", _resolve_by_object)
    app.connect("build-finished", _check_the_reference_is_the_public_api)
