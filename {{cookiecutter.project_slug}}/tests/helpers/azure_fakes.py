"""Test doubles for the Azure path, replacing only the network edge.

- FakeTransport is an azure-core HTTP transport: the real SDK clients (MLClient,
  ContainerInstanceManagementClient) build and send their real requests to it, and
  it answers from a routing table, so serialization, retries, long-running
  operations and the SDK's exception types are all real.
- FakeCredential hands out a token without signing in.
- azure_settings() adds the settings the Azure path reads that mlops.toml may not
  have yet (defaults below), keeping every value mlops.toml does have.
"""
import dataclasses
import io
import json
import re
import time
import types

import requests
from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest._requests_basic import RestRequestsTransportResponse

from ml_service.config import Settings

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"


def azure_defaults(slug):
    return {
        "azure": {"compute_name": "cpu-cluster", "compute_vm_size": "Standard_DS3_v2",
                  "compute_max_nodes": 2},
        "staging": {"cpu": 1.0, "memory_gb": 1.5, "dns_label": f"{slug}-staging",
                    "pull_identity": f"id-{slug}-aci-pull"},
        "production": {"mode": "push", "cluster": f"aks-{slug}", "sync_timeout": 600.0},
    }


class StandInSettings(types.SimpleNamespace):
    target_settings = Settings.target_settings


def azure_settings(settings, project_root=None, **sections):
    """`settings` plus the Azure keys it lacks; `sections` override values per section."""
    defaults = azure_defaults(settings.model.experiment)
    values = {"project_root": project_root or settings.project_root}
    for field in dataclasses.fields(settings):
        if field.name == "project_root":
            continue
        section = dataclasses.asdict(getattr(settings, field.name))
        for key, value in defaults.get(field.name, {}).items():
            section.setdefault(key, value)
        section.update(sections.get(field.name, {}))
        values[field.name] = types.SimpleNamespace(**section)
    return StandInSettings(**values)


class FakeCredential:
    def get_token(self, *scopes, **kwargs):
        return AccessToken("fake-token", int(time.time()) + 3600)

    def get_token_info(self, *scopes, options=None):
        return AccessTokenInfo("fake-token", int(time.time()) + 3600)


@dataclasses.dataclass
class Recorded:
    method: str
    url: str
    body: object
    headers: dict


def arm_error(code, message):
    return {"error": {"code": code, "message": message}}


class FakeTransport(HttpTransport):
    """Answers requests from `routes`: [(method, url regex, answer)], first match wins.

    An answer is (status, body) or (status, body, headers), a callable returning one
    (called with the Recorded request), or an exception instance to raise.
    Unrouted requests get a 404, so a missing route shows up as a test failure.
    """

    def __init__(self, routes):
        self.routes = list(routes)
        self.requests = []

    def __enter__(self):
        return self

    def __exit__(self, *args):
        pass

    def open(self):
        pass

    def close(self):
        pass

    def sleep(self, duration):
        """Retries and polling wait here: no real waiting in tests."""

    def calls(self, method, pattern):
        return [r for r in self.requests if r.method == method and re.search(pattern, r.url)]

    def send(self, request, **kwargs):
        content = request.content if hasattr(request, "content") else request.body
        try:
            body = json.loads(content) if content else None
        except (TypeError, ValueError):
            body = content
        recorded = Recorded(request.method, request.url, body, dict(request.headers))
        self.requests.append(recorded)
        for method, pattern, answer in self.routes:
            if method == request.method and re.search(pattern, request.url):
                break
        else:
            answer = (404, arm_error("NotRouted", f"{request.method} {request.url}"))
        if callable(answer):
            answer = answer(recorded)
        if isinstance(answer, BaseException):
            raise answer
        status, payload, headers = (*answer, {})[:3]
        response = requests.Response()
        response.status_code = status
        response.raw = io.BytesIO(json.dumps(payload).encode() if payload is not None else b"")
        response.headers.update({"Content-Type": "application/json", **headers})
        response.url = request.url
        rest = RestRequestsTransportResponse(request=request, internal_response=response,
                                             block_size=4096)
        rest.read()
        return rest
