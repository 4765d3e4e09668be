"""The client's calls for teams: who a token is, tokens and projects (service/client/http.py's StsweepClient
has them). Managing tokens and projects needs an admin token; `me` and revoking one's own token work with any.

    with StsweepClient(url, admin_token) as api:
        api.create_project("nlp", max_active_studies=4, max_stored_bytes=50 * 1024**3)
        made = api.create_token("ci", project="nlp", role="member", expires_in="30d")   # made.token: shown once
        api.update_project("nlp", max_trials=None)                                     # None: unlimited again
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from service.core.schemas import ProjectPublic, TokenCreated, TokenPublic

if TYPE_CHECKING:
    from service.client.http import Answer

UNSET: Any = object()  # a quota `update_project` leaves as it is (None: unlimited)


def _seg(value: str | int) -> str:
    return quote(str(value), safe="")


class TeamCalls:
    """Tokens and projects over the API; mixed into StsweepClient, whose `_request` sends them."""

    if TYPE_CHECKING:
        def _request(self, method: str, path: str, **kwargs: Any) -> Answer: ...

    # ------------------------------------------------------------ tokens

    def me(self) -> TokenPublic:
        """The token this client uses: its name, project and role."""
        return TokenPublic.model_validate(self._request("GET", "/v1/tokens/me").json())

    def create_token(self, name: str, project: str = "default", role: str = "member",
                     expires_in: int | str | None = None) -> TokenCreated:
        """A new token (admin only); its secret is in `.token`, this once."""
        body = {"name": name, "project": project, "role": role, "expires_in": expires_in}
        return TokenCreated.model_validate(self._request("POST", "/v1/tokens", json=body).json())

    def list_tokens(self) -> list[TokenPublic]:
        """Every token of every project (admin only), without secrets."""
        items = self._request("GET", "/v1/tokens").json()["items"]
        return [TokenPublic.model_validate(t) for t in items]

    def revoke_token(self, token_id: int) -> None:
        """Revoke a token: an admin any, anyone else only its own. 409 for the last live admin token."""
        self._request("DELETE", f"/v1/tokens/{_seg(token_id)}")

    # ------------------------------------------------------------ projects

    def list_projects(self) -> list[ProjectPublic]:
        """Every project for an admin, the token's own for anyone else; each with its quotas and usage."""
        items = self._request("GET", "/v1/projects").json()["items"]
        return [ProjectPublic.model_validate(p) for p in items]

    def get_project(self, name: str) -> ProjectPublic:
        return ProjectPublic.model_validate(self._request("GET", f"/v1/projects/{_seg(name)}").json())

    def create_project(self, name: str, *, share: float | None = None, max_active_studies: int | None = None,
                       max_trials: int | None = None, max_stored_bytes: int | None = None) -> ProjectPublic:
        """A new project (admin only; 409 when the name is taken). Quotas left None are unlimited."""
        body: dict[str, Any] = {"name": name, "max_active_studies": max_active_studies, "max_trials": max_trials,
                                "max_stored_bytes": max_stored_bytes}
        if share is not None:
            body["share"] = share
        return ProjectPublic.model_validate(self._request("POST", "/v1/projects", json=body).json())

    def update_project(self, name: str, *, share: float | None = None, max_active_studies: int | None = UNSET,
                       max_trials: int | None = UNSET, max_stored_bytes: int | None = UNSET) -> ProjectPublic:
        """Change a project's share or quotas (admin only): a quota given as None becomes unlimited; what is not
        given stays."""
        body: dict[str, Any] = {k: v for k, v in (("max_active_studies", max_active_studies),
                                                  ("max_trials", max_trials),
                                                  ("max_stored_bytes", max_stored_bytes)) if v is not UNSET}
        if share is not None:
            body["share"] = share
        return ProjectPublic.model_validate(self._request("PATCH", f"/v1/projects/{_seg(name)}", json=body).json())
