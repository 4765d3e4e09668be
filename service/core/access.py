"""Who a request is: the token's project and role, and what each role may do.

Roles, from least to most: `viewer` reads its project; `member` also creates, changes and deletes its project's
studies and data sets; `admin` does everything in every project and is the only role that manages tokens and
projects. What a token's project does not hold does not exist for it (404, never 403); a write its role may not
make is a 403 naming the role.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

from service.core.errors import Forbidden, InvalidInput, NotFound

Role = Literal["viewer", "member", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)
_RANK = {role: rank for rank, role in enumerate(ROLES)}

DEFAULT_PROJECT = "default"
PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
PROJECT_PATTERN = PROJECT_NAME.pattern


@dataclass(frozen=True)
class Principal:
    """The verified token behind a request."""

    token_id: int
    name: str
    project: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def require(self, needed: Role) -> None:
        """Forbidden unless the role is `needed` or above."""
        if _RANK[self.role] < _RANK[needed]:
            raise Forbidden(f"a {self.role} token may not do this (it needs the {needed} role)", field="role")

    def sees(self, project: str) -> bool:
        """Whether anything of `project` exists for this token."""
        return self.is_admin or project == self.project

    def project_filter(self, asked: str | None) -> str | None:
        """The one project a list shows (None: every project, for an admin that asked for none). A non-admin
        always gets its own project; asking for another one shows nothing of it (it does not exist for it)."""
        if self.is_admin:
            return asked
        return self.project

    def target_project(self, asked: str | None) -> str:
        """The project a new study or data set goes to: the one asked for (an admin's choice), else the token's."""
        if asked is None or asked == self.project:
            return self.project
        if not self.is_admin:
            raise NotFound(f"project {asked!r} not found", field="project")
        return asked


def check_project_name(name: str, field: str = "project") -> str:
    if not isinstance(name, str) or not PROJECT_NAME.fullmatch(name):
        raise InvalidInput("a project name is 1-63 characters of a-z, 0-9 and '-', starting with a letter or "
                           "digit", field=field)
    return name


def check_role(role: str, field: str = "role") -> Role:
    if role not in _RANK:
        raise InvalidInput(f"must be one of {', '.join(ROLES)}", field=field)
    return role  # type: ignore[return-value]
