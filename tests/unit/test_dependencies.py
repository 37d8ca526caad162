"""The dependency bounds setup.cfg declares are ones that work together."""

from __future__ import annotations

import configparser
import importlib.util
import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

from tests.support.servers import ROOT

#: gunicorn 27's gevent worker refuses to load with anything older.
GUNICORN_GEVENT_MINIMUM = Version("24.10.1")


def extra(name: str) -> dict[str, Requirement]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options.extras_require"][name].split("\n")
    requirements = [Requirement(line) for line in lines if line.strip()]
    return {requirement.name: requirement for requirement in requirements}


def lower_bound(requirement: Requirement) -> Version:
    (bound,) = [spec.version for spec in requirement.specifier if spec.operator == ">="]
    return Version(bound)


def gevent_worker_minimum() -> Version | None:
    """The gevent version the installed gunicorn's gevent worker demands, read
    from its source (importing it would patch nothing but could refuse)."""
    spec = importlib.util.find_spec("gunicorn.workers.ggevent")
    assert spec is not None and spec.origin is not None
    source = Path(spec.origin).read_text()
    found = re.search(r"parse_version\('([0-9.]+)'\)", source)
    return Version(found.group(1)) if found else None


def test_gevent_extra_allows_no_gevent_gunicorn_refuses() -> None:
    """``pip install flask-sse-push[gevent]`` never picks a gevent that
    ``gunicorn -k gevent`` rejects ("gevent worker requires gevent 24.10.1")."""
    requirements = extra("gevent")
    gevent_bound = lower_bound(requirements["gevent"])
    assert gevent_bound >= GUNICORN_GEVENT_MINIMUM
    demanded = gevent_worker_minimum()
    if demanded is not None:
        assert gevent_bound >= demanded
    assert "gevent" in requirements["gunicorn"].extras
