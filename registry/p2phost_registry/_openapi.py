"""The OpenAPI description of the JSON API, served at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any

from p2phost_sdk import KINDS

from ._search import SORTS


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    str(code): _json(_ref("Error"), text)
    for code, text in (
        (400, "bad request or invalid upload; nothing stored"),
        (401, "no token or an unknown token"),
        (403, "the token may not do this"),
        (404, "no such plugin or version; the message suggests close names"),
        (409, "the file exists (versions are immutable) or the name is too close to another"),
        (413, "the upload is too large"),
        (422, "a signed upload uses another key than its owner's publisher key"),
    )
}
#: What is_valid_name accepts (PEP 508 names): an owner, a scope, a plugin name.
NAME_PATTERN = "^([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9])$"
_NAME_SCHEMA = {"type": "string", "minLength": 1, "pattern": NAME_PATTERN}
_NAME = {"name": "name", "in": "path", "required": True, "schema": _NAME_SCHEMA,
         "description": "plugin name, any spelling (normalised as PEP 503)"}
_VERSION = {"name": "version", "in": "path", "required": True,
            "schema": {"type": "string", "minLength": 1},
            "description": "a PEP 440 version; any equal spelling finds it (1.0 finds 1.0.0)"}
_OWNER = {"name": "owner", "in": "path", "required": True, "schema": _NAME_SCHEMA}
_PREFIX = {"name": "prefix", "in": "path", "required": True,
           "schema": {"type": "string", "minLength": 8},
           "description": "the token's first characters, as GET /api/v1/tokens lists them"}
_BEARER: list[dict[str, list[str]]] = [{"token": []}]

_FILE = {"type": "object", "properties": {
    "filename": {"type": "string"}, "url": {"type": "string"},
    "sha256": {"type": "string"}, "size": {"type": "integer"},
    "packagetype": {"type": "string", "enum": ["bdist_wheel", "sdist"]},
    "uploaded": {"type": "string", "format": "date-time"},
    "signature_url": {"type": ["string", "null"]},
    "signed": {"type": "boolean", "description": "a p2phost signature the registry checked"},
    "publisher_key": {"type": ["string", "null"],
                      "description": "ed25519:BASE64 key of the file's p2phost signature"},
}}
_VERSION_SCHEMA = {"type": "object", "properties": {
    "version": {"type": "string"}, "summary": {"type": "string"},
    "kinds": {"type": "array", "items": {"type": "string"}},
    "host_api": {"type": "string", "description": "PEP 440 specifier of HOST_API"},
    "requires": {"type": "object", "additionalProperties": {"type": "string"}},
    "provides": {"type": "object"}, "config": {"type": "object"},
    "capabilities": {"type": "array", "items": {"type": "string"}},
    "requires_python": {"type": ["string", "null"]},
    "yanked": {"type": "boolean"}, "yanked_reason": {"type": ["string", "null"]},
    "uploaded": {"type": "string", "format": "date-time"},
    "downloads": {"type": "integer"}, "license": {"type": ["string", "null"]},
    "urls": {"type": "array", "items": {"type": "object", "properties": {
        "label": {"type": "string"}, "url": {"type": "string"}}}},
    "files": {"type": "array", "items": _ref("File")},
}}
_PLUGIN = {"type": "object", "properties": {
    "name": {"type": "string"}, "display_name": {"type": "string"},
    "distribution": {"type": "string",
                     "description": "the distribution pip and uv install (/simple/ lists it)"},
    "summary": {"type": "string"}, "latest": {"type": ["string", "null"]},
    "owners": {"type": "array", "items": {"type": "string"}},
    "downloads": {"type": "integer"},
    "created": {"type": "string"}, "updated": {"type": "string"},
    "versions": {"type": "array", "items": _ref("Version"), "description": "newest first"},
}}
_HIT = {"type": "object", "properties": {
    "name": {"type": "string"}, "summary": {"type": "string"}, "latest": {"type": "string"},
    "kinds": {"type": "array", "items": {"type": "string"}}, "host_api": {"type": "string"},
    "downloads": {"type": "integer"}, "updated": {"type": "string"},
}}
_MULTIPART = {"content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary"},
                   "signature": {"type": "string", "format": "binary",
                                 "description": "a p2phost signature document (checked) "
                                                "or another signature (stored as is)"}},
}}}}


def _query(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False,
            "schema": {"type": "string", **schema}, "description": description}


_TOKEN = {"type": "object", "properties": {
    "prefix": {"type": "string"}, "owner": {"type": "string"},
    "scopes": {"type": "array", "items": {"type": "string"}},
    "created": {"type": "string"}, "expires": {"type": ["string", "null"]},
    "revoked": {"type": ["string", "null"]}, "last_used": {"type": ["string", "null"]},
    "state": {"type": "string", "enum": ["active", "expired", "revoked"]},
}}


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "p2phost registry", "version": "1",
             "description": "Search, inspect, publish and yank p2phost plugins. The Python "
                            "simple index is at /simple/ (PEP 503/691)."},
    "components": {
        "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        "schemas": {"Error": {"type": "object", "properties": {"error": {"type": "string"}}},
                    "File": _FILE, "Version": _VERSION_SCHEMA, "Plugin": _PLUGIN, "Hit": _HIT,
                    "Token": _TOKEN},
    },
    "paths": {
        "/api/v1/plugins": {"get": {
            "summary": "Search plugins",
            "parameters": [
                _query("q", "words matched against name and summary"),
                _query("kind", "one kind (empty: any)", enum=["", *KINDS]),
                _query("host_api", "only plugins with a version compatible with this HOST_API "
                       "(a release number such as 1.0; empty: any)",
                       pattern=r"^([0-9]+(\.[0-9]+)*)?$"),
                _query("sort", "the order (default relevance)", enum=list(SORTS),
                       default="relevance"),
            ],
            "responses": {"200": _json({"type": "object", "properties": {
                "plugins": {"type": "array", "items": _ref("Hit")}}}, "matches"),
                "400": _ERRORS["400"]},
        }},
        "/api/v1/plugins/{name}": {"get": {
            "summary": "A plugin with all its versions", "parameters": [_NAME],
            "responses": {"200": _json(_ref("Plugin"), "the plugin"), "404": _ERRORS["404"]},
        }},
        "/api/v1/plugins/{name}/{version}": {"get": {
            "summary": "One version", "parameters": [_NAME, _VERSION],
            "responses": {"200": _json(_ref("Version"), "the version"), "404": _ERRORS["404"]},
        }},
        "/api/v1/plugins/{name}/audit": {"get": {
            "summary": "The audit log of a plugin: publishes, yanks, ownership changes",
            "parameters": [_NAME],
            "responses": {"200": _json({"type": "object"}, "entries, oldest first"),
                          "404": _ERRORS["404"]},
        }},
        "/api/v1/upload": {"post": {
            "summary": "Publish a wheel or sdist", "security": _BEARER,
            "requestBody": _MULTIPART,
            "responses": {"201": _json({"type": "object", "properties": {
                "name": {"type": "string"}, "version": {"type": "string"},
                "filename": {"type": "string"}, "url": {"type": "string"}}}, "stored"),
                **{k: v for k, v in _ERRORS.items() if k != "404"}},
        }},
        **{
            f"/api/v1/plugins/{{name}}/{{version}}/{verb}": {"post": {
                "summary": f"{verb.capitalize()} a version (an owner's token)",
                "security": _BEARER, "parameters": [_NAME, _VERSION],
                "requestBody": {"content": {"application/json": {"schema": {
                    "type": "object", "properties": {"reason": {"type": "string"}}}}}},
                "responses": {"200": _json({"type": "object"}, "done"), **_ERRORS},
            }}
            for verb in ("yank", "unyank")
        },
        "/api/v1/plugins/{name}/owners": {"post": {
            "summary": "An owner adds an owner", "security": _BEARER, "parameters": [_NAME],
            "requestBody": {"content": {"application/json": {"schema": {
                "type": "object", "required": ["owner"],
                "properties": {"owner": _NAME_SCHEMA}}}}},
            "responses": {"200": _json({"type": "object"}, "the owners now"), **_ERRORS},
        }},
        "/api/v1/plugins/{name}/owners/{owner}": {"delete": {
            "summary": "An owner removes an owner (never the last)", "security": _BEARER,
            "parameters": [_NAME, _OWNER],
            "responses": {"200": _json({"type": "object"}, "the owners now"), **_ERRORS},
        }},
        "/api/v1/tokens": {"get": {
            "summary": "The tokens of the calling token's owner (prefixes, never secrets)",
            "security": _BEARER,
            "responses": {"200": _json({"type": "object", "properties": {
                "owner": {"type": "string"},
                "tokens": {"type": "array", "items": _ref("Token")}}}, "the tokens"),
                "401": _ERRORS["401"]},
        }},
        "/api/v1/tokens/{prefix}/revoke": {"post": {
            "summary": "Revoke one of the owner's tokens, on every server at once",
            "security": _BEARER, "parameters": [_PREFIX],
            "responses": {"200": _json(_ref("Token"), "the token now"), **_ERRORS},
        }},
        "/api/v1/tokens/{prefix}/expire": {"post": {
            "summary": "Make one of the owner's tokens expire in N days (0: now)",
            "security": _BEARER, "parameters": [_PREFIX],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["days"],
                "properties": {"days": {"type": "number", "minimum": 0}}}}}},
            "responses": {"200": _json(_ref("Token"), "the token now"), **_ERRORS},
        }},
        "/pypi/{name}/json": {"get": {
            "summary": "PyPI's JSON API: the latest version and every release",
            "parameters": [_NAME],
            "responses": {"200": _json({"type": "object"}, "as pypi.org answers"),
                          "404": _ERRORS["404"]},
        }},
        "/pypi/{name}/{version}/json": {"get": {
            "summary": "PyPI's JSON API for one version", "parameters": [_NAME, _VERSION],
            "responses": {"200": _json({"type": "object"}, "as pypi.org answers"),
                          "404": _ERRORS["404"]},
        }},
        "/api/v1/publisher-key": {"post": {
            "summary": "Register the token owner's publisher key (a token without scopes)",
            "security": _BEARER,
            "requestBody": {"content": {"application/json": {"schema": {
                "type": "object", "required": ["publisher_key", "proof"],
                "properties": {"publisher_key": {"type": "string"},
                               "proof": {"type": "string", "description": "base64 signature "
                                         "by the key over p2phost-publisher-key-v1\\n + key"}},
            }}}},
            "responses": {"200": _json({"type": "object"}, "owner, publisher_key, previous"),
                          **_ERRORS},
        }},
    },
}
