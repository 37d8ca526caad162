"""Which Redis commands a broker's user may run, asked of Redis itself (ACL, Redis 7+).

A user of Redis's access control lists who lacks a right the broker needs can
still ``PING``, so reachability alone says nothing. :data:`RIGHTS_SCRIPT`
asks Redis, through ``redis.acl_check_cmd`` (Redis 7.0 and later), whether the
connection's user may run each command with the given keys and channels,
without running it. It needs only ``EVAL``, which every Redis broker needs
anyway, and no ``ACL`` rights (a least-privilege user is refused ``ACL
WHOAMI``, ``ACL GETUSER`` and ``ACL DRYRUN``).
"""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Sequence

#: ARGV: groups of (number of words, command, arguments...). Returns the
#: commands refused, each as one string, or ``false`` where Redis cannot tell
#: (before 7.0, where ``redis.acl_check_cmd`` does not exist).
RIGHTS_SCRIPT = """
if type(redis.acl_check_cmd) ~= 'function' then return false end
local refused = {}
local i = 1
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local command = {unpack(ARGV, i + 1, i + n)}
  local ok, allowed = pcall(redis.acl_check_cmd, unpack(command))
  if not ok or not allowed then table.insert(refused, table.concat(command, ' ')) end
  i = i + n + 1
end
return refused
"""


def rights_args(commands: Sequence[Sequence[str]]) -> list[str]:
    """Flatten ``commands`` into :data:`RIGHTS_SCRIPT`'s ARGV."""
    args: list[str] = []
    for command in commands:
        args.append(str(len(command)))
        args.extend(command)
    return args


def refused_message(where: str, refused: Sequence[str], grant: str) -> str:
    """Say which commands the user may not run, and how to grant them.

    :param grant: an ``ACL SETUSER`` line that gives every right the broker needs.
    """
    return (
        f"the Redis user at {where} lacks ACL rights the broker needs: it may not run "
        + "; ".join(refused)
        + f". Grant them, for example: {grant} (see the Redis ACL rights in the deployment docs)."
    )
