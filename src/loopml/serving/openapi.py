"""The data plane's OpenAPI document (served at ``/openapi.json``; schemathesis fuzzes it).

Written by hand because the data plane is raw ASGI (no framework generates it); the tests
check every documented route answers as documented.
"""

from __future__ import annotations

import orjson

from loopml import __version__

_ERROR = {"type": "object", "properties": {"message": {"type": "string"}},
          "required": ["message"]}
_OIP_ERROR = {"type": "object", "properties": {"error": {"type": "string"}},
              "required": ["error"]}
_NAME = {"name": "name", "in": "path", "required": True,
         "schema": {"type": "string", "pattern": "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"}}


def _errors(schema: dict, *codes: int) -> dict:
    return {str(c): {"description": "error", "content": {"application/json": {"schema": schema}}}
            for c in codes}


def _health(summary: str) -> dict:
    return {"get": {"summary": summary, "responses": {
        "200": {"description": "ready"}, "503": {"description": "still loading"}}}}


_PREDICTION = {"type": "object", "properties": {
    "label": {"type": "string"}, "confidence": {"type": "number"},
    "probabilities": {"type": "object", "additionalProperties": {"type": "number"}}}}

_TENSOR = {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
    "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
    "datatype": {"type": "string"}, "data": {}, "parameters": {"type": "object"}}}

DOCUMENT = {
    "openapi": "3.0.3",
    "info": {"title": "LoopML data plane", "version": __version__,
             "description": "Real-time endpoints: the SageMaker runtime contract and the Open "
                            "Inference Protocol v2."},
    "paths": {
        "/ping": _health("SageMaker health check"),
        "/healthz": {"get": {"summary": "process liveness",
                             "responses": {"200": {"description": "alive"}}}},
        "/readyz": _health("every endpoint loaded"),
        "/metrics": {"get": {"summary": "Prometheus metrics",
                             "responses": {"200": {"description": "text exposition format"}}}},
        "/endpoints/{name}/invocations": {"post": {
            "summary": "Invoke an endpoint (SageMaker InvokeEndpoint)",
            "parameters": [_NAME,
                           {"name": "X-Amzn-SageMaker-Target-Variant", "in": "header",
                            "required": False, "schema": {"type": "string"}},
                           {"name": "X-Amzn-SageMaker-Inference-Id", "in": "header",
                            "required": False, "schema": {"type": "string"}}],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"oneOf": [
                    {"type": "object", "properties": {"instances": {"type": "array"}},
                     "required": ["instances"]},
                    {"type": "array"}]}},
                "text/csv": {"schema": {"type": "string"}},
                "application/x-npy": {"schema": {"type": "string", "format": "binary"}},
                # one image file, image models only (fitted to the model's input shape)
                "image/png": {"schema": {"type": "string", "format": "binary"}},
                "image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
            "responses": {"200": {"description": "predictions", "content": {"application/json": {
                "schema": {"type": "object", "properties": {
                    "predictions": {"type": "array", "items": _PREDICTION}}}}}},
                **_errors(_ERROR, 400, 404, 413, 415, 424, 429, 503)}}},
        "/v2": {"get": {"summary": "OIP server metadata",
                        "responses": {"200": {"description": "metadata"}}}},
        "/v2/health/live": {"get": {"summary": "OIP liveness",
                                    "responses": {"200": {"description": "live"}}}},
        "/v2/health/ready": _health("OIP readiness"),
        "/v2/models/{name}": {"get": {"summary": "OIP model metadata", "parameters": [_NAME],
                                      "responses": {"200": {"description": "metadata"},
                                                    **_errors(_OIP_ERROR, 404)}}},
        "/v2/models/{name}/ready": {"get": {"summary": "OIP model readiness",
                                            "parameters": [_NAME],
                                            "responses": {"200": {"description": "ready"},
                                                          **_errors(_OIP_ERROR, 404)}}},
        "/v2/models/{name}/infer": {"post": {
            "summary": "OIP inference", "parameters": [_NAME],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["inputs"], "properties": {
                    "id": {"type": "string"}, "parameters": {"type": "object"},
                    "inputs": {"type": "array", "items": _TENSOR},
                    "outputs": {"type": "array", "items": {"type": "object"}}}}}}},
            "responses": {"200": {"description": "outputs"},
                          **_errors(_OIP_ERROR, 400, 404, 503)}}},
    },
}

OPENAPI_JSON = orjson.dumps(DOCUMENT)
