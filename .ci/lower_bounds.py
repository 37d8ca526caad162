"""Print a pip constraints file pinning every runtime dependency to the oldest
version setup.cfg allows: ``name>=X`` becomes ``name==X``.

Used by .ci/lower-bounds; run it from the repository root.
"""

from __future__ import annotations

import configparser
import re
import sys

#: The extras whose dependencies are runtime ones (``test`` and ``docs`` are not).
RUNTIME_EXTRAS = ("gevent", "redis", "cors", "metrics", "grip")

_REQUIREMENT = re.compile(
    r"(?P<name>[A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*>=\s*(?P<version>[0-9][^,;\s]*)"
)


def lower_bounds(path: str) -> dict[str, str]:
    config = configparser.ConfigParser()
    config.read(path)
    lines = config["options"]["install_requires"].split("\n")
    for extra in RUNTIME_EXTRAS:
        lines += config["options.extras_require"][extra].split("\n")
    pins: dict[str, str] = {}
    for line in filter(None, (line.strip() for line in lines)):
        match = _REQUIREMENT.fullmatch(line)
        if match is None:
            sys.exit(f"{path}: {line!r} has no plain lower bound (name>=X) to pin")
        pins[match["name"].lower()] = match["version"]
    return pins


def check_installed(pins: dict[str, str]) -> None:
    """Exit with a message unless each pinned version is the one installed here."""
    from importlib.metadata import version

    from packaging.version import Version

    wrong = {name: version(name) for name in pins if Version(version(name)) != Version(pins[name])}
    if wrong:
        sys.exit(f"lower bounds: wanted {pins}, but installed {wrong}")


if __name__ == "__main__":
    # lower_bounds.py [--check] [setup.cfg]: print the constraints, or check them.
    args = sys.argv[1:]
    check = args[:1] == ["--check"]
    paths = args[1:] if check else args
    pins = lower_bounds(paths[0] if paths else "setup.cfg")
    if check:
        check_installed(pins)
    else:
        for name, pinned in sorted(pins.items()):
            print(f"{name}=={pinned}")
