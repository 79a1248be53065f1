"""A small reader for Baseten's OpenAPI 3.1 specs: path-template matching, ``$ref`` resolution, schema validation.

(A uniquely named helper module: the test tree has no packages, so its directory is on ``sys.path``.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx
import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
_PARAM = re.compile(r"\{([^}/]+)\}")


@dataclass(frozen=True)
class Match:
    """A concrete path matched to a spec template: its operation and the path parameters it bound."""

    template: str
    params: dict[str, str]
    operation: dict[str, Any]


class Spec:
    """One OpenAPI document, loaded once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.doc: dict[str, Any] = json.loads(path.read_text())
        self.uri = f"urn:baseten-spec:{path.name}"
        self._registry: Registry = Registry().with_resource(
            self.uri, Resource.from_contents(self.doc, default_specification=DRAFT202012)
        )

    @cached_property
    def _templates(self) -> list[tuple[str, re.Pattern[str], int]]:
        compiled = []
        for template in self.doc["paths"]:
            pattern = "".join(
                f"(?P<{part}>[^/]+)" if i % 2 else re.escape(part) for i, part in enumerate(_PARAM.split(template))
            )
            literal_segments = sum(1 for segment in template.split("/") if segment and "{" not in segment)
            compiled.append((template, re.compile(pattern), literal_segments))
        return compiled

    def match(self, method: str, path: str) -> Match | None:
        """The operation serving ``method path``; like OpenAPI routers, concrete segments win over templated ones."""
        candidates = [
            (literal, template, found)
            for template, pattern, literal in self._templates
            if (found := pattern.fullmatch(path)) is not None
        ]
        for _, template, found in sorted(candidates, key=lambda c: -c[0]):
            operation = self.doc["paths"][template].get(method.lower())
            if operation is not None:
                return Match(template, found.groupdict(), operation)
        return None

    def operations(self) -> list[tuple[str, str]]:
        """Every ``(METHOD, template)`` of the spec."""
        return [
            (method.upper(), template)
            for template, item in self.doc["paths"].items()
            for method in HTTP_METHODS
            if method in item
        ]

    def resolve(self, node: Any) -> Any:
        """Follow a local ``$ref`` (repeatedly) to the node it names."""
        while isinstance(node, dict) and "$ref" in node:
            pointer = node["$ref"].removeprefix("#/")
            node = self.doc
            for part in pointer.split("/"):
                node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def schema(self, name: str) -> dict[str, Any]:
        return self.doc["components"]["schemas"][name]

    def request_schema(self, operation: dict[str, Any], media: str = "application/json") -> dict[str, Any] | None:
        body = self.resolve(operation.get("requestBody"))
        if not body:
            return None
        return body["content"][media]["schema"]

    def response_schema(self, operation: dict[str, Any], status: str, media: str = "application/json") -> Any:
        response = self.resolve(operation["responses"][status])
        return response.get("content", {}).get(media, {}).get("schema")

    def validator(self, schema: dict[str, Any]) -> jsonschema.protocols.Validator:
        """A 2020-12 validator for ``schema`` whose ``$ref``s resolve inside this spec."""
        return jsonschema.Draft202012Validator(
            _rebase_refs(schema, self.uri),
            registry=self._registry,
            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
        )

    def errors(self, schema: dict[str, Any], instance: Any) -> list[str]:
        return [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in self.validator(schema).iter_errors(instance)
        ]

    def example(self, schema: Any, *, nullable: bool) -> Any:
        """A minimal instance of ``schema``: required properties only; ``null`` where allowed when ``nullable``."""
        schema = self.resolve(schema)
        if "enum" in schema:
            return schema["enum"][0]
        if "const" in schema:
            return schema["const"]
        for key in ("anyOf", "oneOf"):
            if key in schema:
                options = [self.resolve(option) for option in schema[key]]
                nulls = [o for o in options if o.get("type") == "null"]
                others = [o for o in options if o.get("type") != "null"]
                if nullable and nulls:
                    return None
                return self.example(others[0], nullable=nullable)
        if "allOf" in schema:
            merged: dict[str, Any] = {}
            for part in schema["allOf"]:
                merged.update(self.example(part, nullable=nullable))
            return merged
        kind = schema.get("type", "object")
        if isinstance(kind, list):
            kind = "null" if nullable and "null" in kind else next(k for k in kind if k != "null")
        if kind == "object":
            properties = schema.get("properties", {})
            wanted = schema.get("required", []) if nullable else list(properties)
            return {name: self.example(properties.get(name, {}), nullable=nullable) for name in wanted}
        if kind == "array":
            return [] if nullable else [self.example(schema.get("items", {}), nullable=nullable)]
        return {
            "string": "2026-01-01T00:00:00Z" if schema.get("format") == "date-time" else "x",
            "integer": schema.get("minimum", 1),
            "number": schema.get("minimum", 1.5),
            "boolean": True,
            "null": None,
        }[kind]


def _rebase_refs(node: Any, uri: str) -> Any:
    """Point ``#/...`` refs of a schema fragment at the spec document they came from."""
    if isinstance(node, dict):
        return {
            key: (
                uri + value
                if key == "$ref" and isinstance(value, str) and value.startswith("#")
                else _rebase_refs(value, uri)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rebase_refs(item, uri) for item in node]
    return node


def server_hosts(spec: Spec, **variables: str) -> dict[str, str]:
    """Each server's description mapped to its host with ``variables`` substituted (``{model_id}`` ...)."""
    hosts = {}
    for server in spec.doc["servers"]:
        url = server["url"]
        for name, value in variables.items():
            url = url.replace("{" + name + "}", value)
        hosts[server.get("description", url)] = url.removeprefix("https://")
    return hosts


MODEL_APIS_COMPLETION = {
    "id": "cmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}
#: Requests no spec describes (documented in BASETEN_API.md sections 2 and 6), as (method, host kind, path pattern).
OUTSIDE_THE_SPECS = {
    ("POST", "inference.baseten.co", "/v1/chat/completions"),
    ("GET", "inference.baseten.co", "/v1/models"),
    ("POST", "target", "{prefix}/sync/v1/chat/completions"),
}


def spec_responder(inference: Spec, management: Spec) -> Callable[[httpx.Request], httpx.Response]:
    """A respx side effect answering each request with its operation's 2xx status and a spec-generated body."""

    def respond(request: httpx.Request) -> httpx.Response:
        host, method, path = request.headers["host"], request.method, request.url.path
        if host == "inference.baseten.co":
            if path == "/v1/models":
                return httpx.Response(200, json={"object": "list", "data": [{"id": "a/b", "object": "model"}]})
            return httpx.Response(200, json=MODEL_APIS_COMPLETION)
        if "/sync/" in path:
            return httpx.Response(200, json=MODEL_APIS_COMPLETION)
        spec = management if host == "api.baseten.co" else inference
        found = spec.match(method, path)
        if found is None:
            return httpx.Response(404, json={"error": f"{method} {path} is not in {spec.path.name}"})
        status = next(code for code in found.operation["responses"] if code.startswith("2"))
        schema = spec.response_schema(found.operation, status)
        if schema is None:
            return httpx.Response(int(status))
        return httpx.Response(int(status), json=spec.example(schema, nullable=False))

    return respond
