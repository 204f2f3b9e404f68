"""A small HTTP client for the daemon's API, used by the CLI and the demo."""

from __future__ import annotations

from pathlib import Path
from collections.abc import Sequence
from typing import Any

import httpx

from poold_common.https import client_context

DEFAULT_URL = "http://127.0.0.1:8470"


class ClientError(Exception):
    """The daemon refused a request or could not be reached; the message says which."""


class PooldClient:
    """The daemon's API as ``token`` (``Authorization: Bearer``); HTTPS answers are verified
    against ``ca_file`` (default: the system's CAs)."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, ca_file: str | Path | None = None, timeout: float = 10.0):
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url + "/api/v1", timeout=timeout, headers=headers, verify=client_context(ca_file))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "PooldClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach poold at {self.url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                detail = str(response.json().get("detail", response.text))
            except ValueError:
                detail = response.text or response.reason_phrase
            if response.status_code == 401:
                detail += " (the CLI sends $POOLD_TOKEN, else `token` from ~/.config/poold/client.toml)"
            raise ClientError(detail)
        return response

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/jobs", json={"spec": spec}).json()

    def plan(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/jobs/plan", json={"spec": spec}).json()

    def jobs(self, states: list[str] | None = None, limit: int = 200) -> list[dict[str, Any]]:
        return self._call("GET", "/jobs", params={"state": states or [], "limit": limit}).json()

    def job(self, job_id: int) -> dict[str, Any]:
        return self._call("GET", f"/jobs/{job_id}").json()

    def why(self, job_id: int) -> dict[str, Any]:
        return self._call("GET", f"/jobs/{job_id}/why").json()

    def cancel(self, job_id: int, force: bool = False) -> dict[str, Any]:
        return self._call("POST", f"/jobs/{job_id}/cancel", params={"force": "true"} if force else {}).json()

    def log(self, job_id: int, offset: int = 0) -> bytes:
        return self._call("GET", f"/jobs/{job_id}/log", params={"offset": offset}).content

    def nodes(self) -> list[dict[str, Any]]:
        return self._call("GET", "/nodes").json()

    def devices(self, node: str | None = None) -> list[dict[str, Any]]:
        return self._call("GET", "/devices", params={"node": node} if node else {}).json()

    def return_device(self, uuid: str, node: str | None = None) -> dict[str, Any]:
        return self._call("POST", f"/devices/{uuid}/return", params={"node": node} if node else {}).json()

    def drain(self, node: str, reason: str | None = None) -> dict[str, Any]:
        return self._call("POST", f"/nodes/{node}/drain", json={"reason": reason}).json()

    def undrain(self, node: str) -> dict[str, Any]:
        return self._call("POST", f"/nodes/{node}/undrain").json()

    def tokens(self, node: str | None = None, include_ended: bool = False) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"include_ended": "true"} if include_ended else {}
        return self._call("GET", "/tokens", params=params | ({"node": node} if node else {})).json()

    def create_token(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/tokens", json=request).json()

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        return self._call("POST", f"/tokens/{token_id}/revoke").json()

    def pool(self) -> dict[str, Any]:
        return self._call("GET", "/pool").json()

    def usage(self, by: str = "queue", since: str | None = None, states: Sequence[str] = (), idle_below: float | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"by": by, "state": list(states)}
        if since is not None:
            params["since"] = since
        if idle_below is not None:
            params["idle_below"] = idle_below
        return self._call("GET", "/usage", params=params).json()

    def queues(self) -> list[dict[str, Any]]:
        return self._call("GET", "/queues").json()

    def queue(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/queues/{name}").json()

    def create_queue(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/queues", json=request).json()

    def update_queue(self, name: str, request: dict[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", f"/queues/{name}", json=request).json()

    def delete_queue(self, name: str) -> None:
        self._call("DELETE", f"/queues/{name}")
