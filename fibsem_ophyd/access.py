"""Who may run which plans through the facility's HTTP front of the queue server.

The queue server (bluesky-queueserver) filters plans and devices by *user group*
(``profile_collection/startup/user_group_permissions.yaml``: ``primary`` may run every
public plan, ``observers`` may image but not move, mill, deposit or save positions). Over
its 0MQ socket the group is whatever the client says, so anyone who reaches the socket is
``primary``. bluesky-httpserver closes that: users authenticate (a facility's PAM or LDAP
accounts, or an API key made by an authenticated user), the server's *API access* policy
gives each user roles (what HTTP endpoints they may call), and its *resource access* policy
names each user's queue-server group; the group a client sends is ignored.

:class:`UserGroups` is that resource-access policy for a facility: a fixed table of user ->
group, with unknown users in the least-privileged group (``observers`` by default; the
API-access policy decides separately whether they may call anything at all).
``profile_collection/httpserver/config.yml`` is the facility configuration that uses it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["UserGroups"]

_NAME = re.compile(r"^[a-zA-Z_][0-9a-zA-Z_]*$")  # the queue server's group-name rule
_USER = re.compile(r"^[0-9a-zA-Z_.@\-+]+$")  # bluesky-httpserver's user-name rule


class UserGroups:
    """bluesky-httpserver resource-access policy: each user's queue-server group.

    Parameters
    ----------
    users : mapping of str to str
        User name -> queue-server group (``primary``, ``observers``, ...).
    default_group : str
        The group of a user not in ``users``; default ``observers``, the group that may
        only image.

    Raises
    ------
    ValueError
        A user or group name that the servers would not accept, named with the rule.

    Examples
    --------
    In the HTTP server's configuration file::

        resource_access:
          policy: fibsem_ophyd.access:UserGroups
          args:
            users: {alice: primary, olga: observers}
    """

    def __init__(self, *, users: Mapping[str, str] | None = None,
                 default_group: str = "observers"):
        if users is not None and not isinstance(users, Mapping):
            raise ValueError(f"users must map user names to groups, got {users!r}")
        table = dict(users or {})
        for user, group in table.items():
            if not isinstance(user, str) or not _USER.match(user):
                raise ValueError(f"user name {user!r} must match {_USER.pattern}")
            if not isinstance(group, str) or not _NAME.match(group):
                raise ValueError(f"group {group!r} of user {user!r} must match "
                                 f"{_NAME.pattern}")
        if not isinstance(default_group, str) or not _NAME.match(default_group):
            raise ValueError(f"default_group {default_group!r} must match {_NAME.pattern}")
        self._groups = table
        self._default = default_group

    def get_resource_group(self, username: str) -> str:
        """The queue-server group of ``username`` (the default group if not listed)."""
        return self._groups.get(username, self._default)
