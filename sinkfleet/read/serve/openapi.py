"""The service's OpenAPI 3.0 document, built from the catalogue (pure): the sink names
are an enum, and ``GET /v1/sinks`` lists each sink's columns, types and orders."""

from __future__ import annotations

from typing import Any

from sinkfleet.catalogue import Catalogue
from sinkfleet.read.query import MAX_LIMIT
from sinkfleet.sink.postgres.summary_sql import has_summary

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _responses(ok: dict[str, Any], *extra: tuple[str, str]) -> dict[str, Any]:
    out = {"200": ok, "400": _json(_ERROR, "a parameter the query model refuses"),
           "401": _json(_ERROR, "no valid bearer token"),
           "404": _json(_ERROR, "no such sink, route or id"),
           "default": _json(_ERROR, "busy (503), timed out (503) or another error")}
    for code, description in extra:
        out[code] = {"description": description}
    return out


def _param(name: str, where: str, schema: dict[str, Any], description: str,
           required: bool = False, **more: Any) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path",
            "schema": schema, "description": description, **more}


def openapi(catalogue: Catalogue, version: str = "1") -> dict[str, Any]:
    sinks = sorted(catalogue.sinks)
    states = sorted(n for n, s in catalogue.sinks.items() if s.spec.mode == "state")
    audits = sorted(n for n, s in catalogue.sinks.items() if s.spec.mode == "audit")
    sink = _param("sink", "path", {"type": "string", "enum": sinks}, "a sink of sinks/")
    where = _param("where", "query", {"type": "array", "items": {"type": "string"}},
                   "a filter, repeatable (all must hold), in the text form of `sinkfleet"
                   " query rows --where`: status=failed, avg_reward>0.5, 'status in a,b',"
                   " 'ts between T1,T2', 'tags contains x', 'error is null'",
                   style="form", explode=True)
    columns = _param("columns", "query", {"type": "string"},
                     "comma-separated columns to return (default: all)")
    order_by = _param("order_by", "query", {"type": "string"},
                      "an indexed column (GET /v1/sinks lists them)")
    row_list = {"type": "array", "items": {"$ref": "#/components/schemas/Row"}}
    page = {"type": "object", "required": ["rows", "next_cursor"], "properties": {
        "rows": row_list, "next_cursor": {"type": "string", "nullable": True}}}
    ids = _param("id", "path", {"type": "string"},
                 "the id's parts in the sink's id order, one path segment each"
                 " (percent-encode a / inside a part)")
    paths: dict[str, Any] = {
        "/healthz": {"get": {"summary": "ready: PostgreSQL answers", "security": [],
                             "responses": {"200": _json({"type": "object"}, "ready"),
                                           "503": _json(_ERROR, "not ready")}}},
        "/openapi.json": {"get": {"summary": "this document",
                                  "responses": _responses(_json({"type": "object"}, "it"))}},
        "/metrics": {"get": {"summary": "Prometheus metrics (per-route latency histograms)",
                             "responses": _responses({"description": "text format",
                                                      "content": {"text/plain": {
                                                          "schema": {"type": "string"}}}})}},
        "/v1/sinks": {"get": {"summary": "the sinks, their columns, orders and filters",
                              "responses": _responses(_json({
                                  "type": "object", "required": ["sinks"], "properties": {
                                      "sinks": {"type": "array", "items": {
                                          "$ref": "#/components/schemas/Sink"}}}},
                                  "the sinks"))}},
        "/v1/sinks/{sink}/rows": {"get": {
            "summary": "one page of a sink's rows by filters, in an indexed order",
            "parameters": [sink, where, order_by,
                           _param("desc", "query", {"type": "boolean"},
                                  "descending (newest first)"),
                           _param("limit", "query", {"type": "integer", "minimum": 1,
                                                     "maximum": MAX_LIMIT},
                                  "rows a page (default 100)"),
                           _param("cursor", "query", {"type": "string", "maxLength": 4096},
                                  "the next_cursor of the previous page"), columns],
            "responses": _responses(_json(page, "a page"))}},
        "/v1/sinks/{sink}/state/{id}": {"get": {
            "summary": "the current state of one id (ETag; If-None-Match gives 304)",
            "parameters": [{**sink, "schema": {"type": "string", "enum": states}}, ids,
                           _param("If-None-Match", "header", {"type": "string"},
                                  "an ETag of an earlier answer")],
            "responses": _responses(_json({"$ref": "#/components/schemas/Row"}, "the row"),
                                    ("304", "unchanged since the ETag given"))}},
        "/v1/sinks/{sink}/state/{id}/history": {"get": {
            "summary": "every recorded version of one id, by version",
            "parameters": [{**sink, "schema": {"type": "string", "enum": states}}, ids],
            "responses": _responses(_json({"type": "object", "required": ["rows"],
                                           "properties": {"rows": row_list}},
                                          "the versions"))}},
        "/v1/sinks/{sink}/audit": {"get": {
            "summary": "the token's tenant's audit trail, in chain order",
            "parameters": [{**sink, "schema": {"type": "string", "enum": audits}},
                           _param("actor", "query", {"type": "string"}, "one actor's"),
                           _param("start", "query", {"type": "string", "format": "date-time"},
                                  "from (ISO-8601, inclusive)"),
                           _param("end", "query", {"type": "string", "format": "date-time"},
                                  "until (ISO-8601, exclusive)"),
                           _param("limit", "query", {"type": "integer", "minimum": 1,
                                                     "maximum": MAX_LIMIT},
                                  "entries (default 1000)")],
            "responses": _responses(_json({"type": "object", "required": ["rows"],
                                           "properties": {"rows": row_list}},
                                          "the trail"))}},
        "/v1/sinks/{sink}/stream": {"get": {
            "summary": "new rows as Server-Sent Events (event: row; id: a cursor)",
            "parameters": [sink, where, order_by, columns,
                           _param("Last-Event-ID", "header", {"type": "string"},
                                  "resume after this event (a cursor)")],
            "responses": _responses({"description": "text/event-stream", "content": {
                "text/event-stream": {"schema": {"type": "string"}}}})}},
    }
    summarised = sorted(n for n, s in catalogue.sinks.items() if has_summary(s))
    if summarised:  # an enum may not be empty
        paths["/v1/sinks/{sink}/windows"] = {"get": {
            "summary": "per summary window and by-group: rows and count/sum/min/max/avg of"
                       " each summed column, the detail kept and the summary of the"
                       " detail dropped as one answer",
            "parameters": [{**sink, "schema": {"type": "string", "enum": summarised}},
                           {**where, "description": "a filter on the summary's by columns,"
                                                    " repeatable, as for rows"},
                           _param("start", "query", {"type": "string", "format": "date-time"},
                                  "from (ISO-8601; widened to its window's start)",
                                  required=True),
                           _param("end", "query", {"type": "string", "format": "date-time"},
                                  "until (ISO-8601, exclusive; widened to a window's end;"
                                  " default now)")],
            "responses": _responses(_json({"type": "object", "required": ["windows"],
                                           "properties": {"windows": row_list}},
                                          "the windows, oldest first"))}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "sinkfleet read service", "version": version,
                 "description": "Reads of the catalogue's sinks over one query model"
                                " (docs/reads.md, docs/http-read-service.md)."},
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"],
                          "properties": {"error": {"type": "string"}}},
                "Row": {"type": "object", "additionalProperties": True},
                "Sink": {"type": "object", "required": [
                    "name", "mode", "tenant", "id", "time_column", "columns", "orderable",
                    "filters"], "properties": {
                    "name": {"type": "string"}, "mode": {"type": "string"},
                    "tenant": {"type": "boolean"},
                    "id": {"type": "array", "items": {"type": "string"}},
                    "time_column": {"type": "string", "nullable": True},
                    "columns": {"type": "array", "items": {"type": "object", "properties": {
                        "name": {"type": "string"}, "type": {"type": "string"},
                        "nullable": {"type": "boolean"}}}},
                    "orderable": {"type": "array", "items": {"type": "string"}},
                    "filters": {"type": "object", "additionalProperties": {
                        "type": "array", "items": {"type": "string"}}}}},
            }},
    }
