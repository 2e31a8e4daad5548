"""The client's models are the contract the server's bodies are checked against: each client model is
compared, field by field, with the schema the server's OpenAPI document (app.openapi()) publishes for
the operation it reads or sends. A field added, dropped, renamed or retyped on either side fails here.

Rules: a response model has exactly the server's fields, each of the same JSON type (nested models
compared the same way), the same enum values, and requires nothing the server may leave out. A
request model has exactly the server's fields; its values may be null (unset: the server's default
applies), otherwise of the same type.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter

from atelier.client import models as m
from atelier.client import requests as rq

RESPONSES = [
    ("get", "/v1/jobs/{job_id}", "200", m.Job),
    ("get", "/v1/jobs", "200", m.Page[m.Job]),
    ("post", "/v1/jobs/{job_id}/cancel", "200", m.Job),
    ("get", "/v1/jobs/{job_id}/events", "200", m.Page[m.JobEvent]),
    ("post", "/v1/generation-jobs", "202", m.Job),
    ("post", "/v1/generation-jobs", "200", m.Job),
    ("get", "/v1/jobs/{job_id}/images", "200", m.Page[m.GeneratedImage]),
    ("post", "/v1/training-jobs", "202", m.Job),
    ("post", "/v1/training-jobs", "200", m.Job),
    ("get", "/v1/models", "200", m.Page[m.ModelVersion]),
    ("get", "/v1/models/{model_id}", "200", m.ModelVersion),
    ("post", "/v1/models/{model_id}/promote", "200", m.ModelVersion),
    ("get", "/v1/schedules", "200", m.Page[m.Schedule]),
    ("put", "/v1/schedules/{name}", "200", m.Schedule),
    ("post", "/v1/schedules/{name}/run", "202", m.ScheduleRun),
    ("post", "/v1/schedules/{name}/run", "200", m.ScheduleRun),
    ("post", "/v1/catalogue/images", "201", m.UploadResult),
    ("post", "/v1/catalogue/imports", "202", m.Job),
    ("post", "/v1/catalogue/imports", "200", m.Job),
    ("get", "/v1/catalogue/images", "200", m.Page[m.CatalogueImage]),
    ("get", "/v1/catalogue/stats", "200", m.CatalogueStats),
    ("post", "/v1/trend-reports", "202", m.Job),
    ("post", "/v1/trend-reports", "200", m.Job),
    ("get", "/v1/trend-reports/{job_id}", "200", m.TrendReport),
    ("post", "/v1/keys", "201", m.CreatedKey),
    ("get", "/v1/keys", "200", m.Page[m.ApiKey]),
    ("post", "/v1/keys/{key_id}/revoke", "200", m.ApiKey),
    ("post", "/v1/keys/{key_id}/webhook-secret", "200", m.WebhookSecret),
]

REQUESTS = [
    ("post", "/v1/generation-jobs", rq.GenerationRequest),
    ("post", "/v1/training-jobs", rq.TrainingRequest),
    ("post", "/v1/trend-reports", rq.TrendRequest),
    ("post", "/v1/keys", rq.KeyRequest),
    ("put", "/v1/schedules/{name}", rq.ScheduleRequest),
]


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    from atelier.api.main import app

    return app.openapi()


class Schemas:
    """One JSON schema document and the named schemas its $refs point into."""

    def __init__(self, root: dict[str, Any], defs: dict[str, Any]):
        self.root, self.defs = root, defs

    @classmethod
    def of_client(cls, model: Any, mode: str) -> Schemas:
        schema = TypeAdapter(model).json_schema(mode=mode)
        return cls(schema, schema.get("$defs", {}))

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = self.defs[schema["$ref"].rsplit("/", 1)[-1]]
        return schema


def variants(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return (
        [v for s in schema.get("anyOf", schema.get("oneOf", [schema])) for v in variants(s)]
        if ("anyOf" in schema or "oneOf" in schema)
        else [schema]
    )


def shape(schema: dict[str, Any], where: Schemas) -> str:
    """A short type signature: `string`, `datetime`, `integer|null`, `array[object:Job]`, ..."""
    out = []
    for v in variants(schema):
        if "$ref" in v:
            out.append("model")
            continue
        t = v.get("type", "any")
        if t == "string" and v.get("format") == "date-time":
            t = "datetime"
        elif t == "string" and v.get("format") in ("uri",):
            t = "string"
        elif t == "array":
            t = f"array[{shape(v.get('items', {}), where)}]"
        elif t == "object" and "properties" in v:
            t = "model"
        elif t == "object":
            t = "object"
        out.append(t)
    return "|".join(sorted(set(out)))


def enum_of(schema: dict[str, Any], where: Schemas) -> set | None:
    values: set = set()
    for v in variants(schema):
        v = where.resolve(v)
        if "enum" in v:
            values |= set(v["enum"])
        elif "const" in v:
            values.add(v["const"])
    return values or None


def nested(schema: dict[str, Any], where: Schemas) -> dict[str, Any] | None:
    """The object schema a field holds (directly, in an array, or nullable), if it is a model."""
    for v in variants(schema):
        if "$ref" in v or (v.get("type") == "object" and "properties" in v):
            return where.resolve(v)
        if v.get("type") == "array" and v.get("items"):
            inner = nested(v["items"], where)
            if inner is not None:
                return inner
    return None


def compare(client: dict, cs: Schemas, server: dict, ss: Schemas, path: str, *, request: bool) -> list[str]:
    problems: list[str] = []
    cprops, sprops = client.get("properties", {}), server.get("properties", {})
    for name in sorted(set(sprops) - set(cprops)):
        problems.append(f"{path}.{name}: the server has it, the client model does not")
    for name in sorted(set(cprops) - set(sprops)):
        problems.append(f"{path}.{name}: the client model has it, the server does not")
    if not request:
        stricter = set(client.get("required", [])) - set(server.get("required", []))
        problems += [f"{path}.{n}: required by the client, optional on the server" for n in sorted(stricter)]
    for name in sorted(set(cprops) & set(sprops)):
        c, s = cprops[name], sprops[name]
        c_shape, s_shape = shape(c, cs), shape(s, ss)
        if request:  # unset request fields are null: the server's default applies
            c_shape = "|".join(p for p in c_shape.split("|") if p != "null") or c_shape
            s_shape = "|".join(p for p in s_shape.split("|") if p != "null") or s_shape
        if c_shape != s_shape:
            problems.append(f"{path}.{name}: client {c_shape}, server {s_shape}")
            continue
        c_enum, s_enum = enum_of(c, cs), enum_of(s, ss)
        if c_enum != s_enum:
            problems.append(
                f"{path}.{name}: client values {sorted(c_enum or [])}, server {sorted(s_enum or [])}"
            )
        c_inner, s_inner = nested(c, cs), nested(s, ss)
        if c_inner is not None and s_inner is not None and not request:
            problems += compare(c_inner, cs, s_inner, ss, f"{path}.{name}", request=request)
    return problems


def server_body(openapi: dict, method: str, path: str, status: str | None) -> tuple[dict, Schemas]:
    op = openapi["paths"][path][method]
    if status is None:
        content = op["requestBody"]["content"]["application/json"]
    else:
        content = op["responses"][status]["content"]["application/json"]
    where = Schemas(openapi, openapi["components"]["schemas"])
    return where.resolve(content["schema"]), where


@pytest.mark.parametrize(("method", "path", "status", "model"), RESPONSES, ids=lambda v: str(v))
def test_client_response_models_match_the_servers_openapi(openapi, method, path, status, model):
    server, ss = server_body(openapi, method, path, status)
    cs = Schemas.of_client(model, "validation")
    problems = compare(
        cs.resolve(cs.root), cs, server, ss, f"{method.upper()} {path} {status}", request=False
    )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("method", "path", "model"), REQUESTS, ids=lambda v: str(v))
def test_client_request_models_match_the_servers_openapi(openapi, method, path, model):
    server, ss = server_body(openapi, method, path, None)
    cs = Schemas.of_client(model, "serialization")
    problems = compare(cs.resolve(cs.root), cs, server, ss, f"{method.upper()} {path} body", request=True)
    assert not problems, "\n".join(problems)


def test_retrain_params_match_the_schedule_service():
    from atelier.training.schedules import RetrainParams

    server = TypeAdapter(RetrainParams).json_schema()
    server_fields = set(server["properties"]) - {"webhook_key_id"}  # set by the API, never by a client
    assert set(rq.RetrainParams.model_fields) == server_fields


def test_every_v1_operation_is_covered(openapi):
    """A new JSON route without a client model fails here: add it to the client and to RESPONSES."""
    covered = {(mth, p) for mth, p, _, _ in RESPONSES}
    # redirects, the event stream and the PNG preview are read by hand in the client
    by_hand = {
        ("get", "/v1/jobs/{job_id}/manifest"),
        ("get", "/v1/jobs/{job_id}/archive"),
        ("get", "/v1/jobs/{job_id}/stream"),
        ("get", "/v1/jobs/{job_id}/images/{index}/tryon"),
    }
    ops = {(mth, p) for p, item in openapi["paths"].items() if p.startswith("/v1/") for mth in item}
    assert ops - covered - by_hand == set()


def test_the_drift_check_sees_a_changed_field(openapi):
    class Drifted(BaseModel):  # the client's Job with one field renamed and one retyped
        id: int
        kind: str
        state: str

    server, ss = server_body(openapi, "get", "/v1/jobs/{job_id}", "200")
    cs = Schemas.of_client(Drifted, "validation")
    problems = compare(cs.resolve(cs.root), cs, server, ss, "Job", request=False)
    assert any("Job.status: the server has it" in p for p in problems)
    assert any("Job.state: the client model has it" in p for p in problems)
    assert any(p.startswith("Job.id: client integer, server string") for p in problems)


def test_webhook_envelope_reads_as_the_clients_webhook_event(session):
    from atelier.core import jobs, units
    from atelier.webhooks import events

    job = jobs.create_job(session=session, kind="train", params={"webhook_url": "https://example.test/h"})
    units.end_job(session=session, job=job, to=jobs.FAILED, error="boom")
    session.flush()
    event = m.WebhookEvent.model_validate_json(events.body_of(job))
    assert event.type == "job.failed" and event.data.id == job.id and event.data.error == "boom"
    assert event.data.kind == "train" and event.timestamp == event.data.finished_at
    assert set(json.loads(events.body_of(job))) == {"type", "timestamp", "data"}
