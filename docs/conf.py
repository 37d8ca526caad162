"""Sphinx configuration for the Flask-SSE-Push documentation.

Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (after
``pip install -e '.[docs]'``). The build needs no network: intersphinx links to
Python, Flask, Werkzeug, redis-py and gevent are made only from inventories that
are reachable, see ``_intersphinx_mapping`` below.
"""

from __future__ import annotations

import inspect
import os
import sys
import typing as t
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import flask_sse_push  # noqa: E402

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
# document (private modules, type aliases, base classes of no use to users).
nitpick_ignore_regex += [
    # The brokers' private modules (brokers/redis/, brokers/redis/cluster/, ...).
    (r"py:mod", r"\.*(flask_sse_push\.brokers\.(redis\.)?((cluster|standalone)\.)?)?_\w+"),
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


def _public_names() -> set[str]:
    """Every name the API reference must document: ``__all__`` of each public module."""
    import importlib

    names: set[str] = set()
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        exported = getattr(module, "__all__", None)
        if exported is None:
            exported = [
                name
                for name, value in vars(module).items()
                if not name.startswith("_")
                and getattr(value, "__module__", None) == module_name
                and callable(value)
            ]
        for name in exported:
            value = getattr(module, name)
            home = getattr(value, "__module__", module_name)
            # Re-exports count as documented where they are defined or exported.
            names.add(f"{module_name}.{name}|{home}.{getattr(value, '__qualname__', name)}")
    for path in PUBLIC_NAMES:
        module_name, _, name = path.rpartition(".")
        value = getattr(importlib.import_module(module_name), name)
        home = getattr(value, "__module__", module_name)
        names.add(f"{path}|{home}.{getattr(value, '__qualname__', name)}")
    return names


#: Modules whose public names make up the API.
PUBLIC_MODULES = [
    "flask_sse_push",
    "flask_sse_push.brokers",
    "flask_sse_push.brokers.redis",
    "flask_sse_push.brokers.redis_cluster",
    "flask_sse_push.testing",
    "flask_sse_push.data",
    "flask_sse_push.validation",
    "flask_sse_push.client",
]

#: Public names outside those modules' ``__all__``: the worker class (loaded lazily,
#: as it imports gevent) and the per-app runtime.
PUBLIC_NAMES = [
    "flask_sse_push.servers.gunicorn.GeventWorker",
    "flask_sse_push.brokers.handoff.ParkingLot",
    "flask_sse_push.runtime.Runtime",
    "flask_sse_push.runtime.get_runtime",
]


def _check_every_public_name_is_documented(app: t.Any, exception: Exception | None) -> None:
    if exception is not None:
        return
    from sphinx.util import logging

    documented = set(app.env.get_domain("py").objects)
    for entry in sorted(_public_names()):
        exported, defined = entry.split("|")
        if exported not in documented and defined not in documented:
            logging.getLogger(__name__).warning(
                "%s is public but not in the API reference (docs/api.rst)", exported
            )


def _lookup(path: str) -> tuple[object, str] | None:
    """Return ``(owner, attribute)`` for a dotted path, or ``None``.

    Attributes are named by their owner and name, not their value: two
    attributes that hold the same value (``None``) are different things.
    """
    import importlib

    parts = path.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
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
    app.connect("build-finished", _check_every_public_name_is_documented)
