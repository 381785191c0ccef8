/// `GET /openapi.json`: every endpoint the server has, for clients and for schemathesis.
let openAPIDocument = #"""
{
  "openapi": "3.0.3",
  "info": {"title": "vitmsn serve", "version": "1",
           "description": "ViT-MSN inference: the Open Inference Protocol (KServe v2) with Triton's binary tensor extension, and simple endpoints."},
  "components": {
    "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    "schemas": {
      "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
      "Tensor": {"type": "object", "required": ["name", "datatype", "shape"], "properties": {
        "name": {"type": "string"}, "datatype": {"type": "string", "enum": ["FP32", "BYTES"]},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "parameters": {"type": "object"},
        "data": {"type": "array"}}},
      "InferRequest": {"type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"}, "parameters": {"type": "object"},
        "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}},
        "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
          "name": {"type": "string", "enum": ["logits", "probabilities", "last_hidden_state", "embedding"]},
          "parameters": {"type": "object"}}}}}},
      "InferResponse": {"type": "object", "required": ["model_name", "outputs"], "properties": {
        "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
        "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}}}},
      "Prediction": {"type": "object", "required": ["label", "score"], "properties": {"label": {"type": "string"}, "score": {"type": "number"}}}
    },
    "parameters": {
      "name": {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}
    },
    "responses": {
      "Error": {"description": "the request was refused", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    }
  },
  "security": [{"bearer": []}],
  "paths": {
    "/v2/health/live": {"get": {"security": [], "summary": "the server is up", "responses": {"200": {"description": "live", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
    "/v2/health/ready": {"get": {"security": [], "summary": "the server takes requests", "responses": {"200": {"description": "ready", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
    "/v2": {"get": {"summary": "server metadata", "responses": {"200": {"description": "name, version, extensions", "content": {"application/json": {"schema": {"type": "object"}}}}, "401": {"$ref": "#/components/responses/Error"}}}},
    "/v2/models/{name}": {"get": {"summary": "model metadata: inputs and outputs", "parameters": [{"$ref": "#/components/parameters/name"}],
      "responses": {"200": {"description": "metadata", "content": {"application/json": {"schema": {"type": "object"}}}}, "401": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"}}}},
    "/v2/models/{name}/ready": {"get": {"summary": "the model takes requests", "parameters": [{"$ref": "#/components/parameters/name"}],
      "responses": {"200": {"description": "ready", "content": {"application/json": {"schema": {"type": "object"}}}}, "401": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"}}}},
    "/v2/models/{name}/infer": {"post": {"summary": "inference (JSON, or Triton's binary tensor extension)", "parameters": [{"$ref": "#/components/parameters/name"}],
      "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}}}},
      "responses": {"200": {"description": "outputs", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InferResponse"}}, "application/octet-stream": {}}},
        "400": {"$ref": "#/components/responses/Error"}, "401": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"},
        "413": {"$ref": "#/components/responses/Error"}, "503": {"$ref": "#/components/responses/Error"}, "504": {"$ref": "#/components/responses/Error"}}}},
    "/v1/models/{name}/classify": {"post": {"summary": "an image file (raw or multipart) to its top labels", "parameters": [{"$ref": "#/components/parameters/name"},
        {"name": "top_k", "in": "query", "schema": {"type": "integer", "minimum": 1}}],
      "requestBody": {"required": true, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}, "image/jpeg": {"schema": {"type": "string", "format": "binary"}}, "image/png": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}}}},
      "responses": {"200": {"description": "labels, best first", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Prediction"}}}}},
        "400": {"$ref": "#/components/responses/Error"}, "401": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"},
        "413": {"$ref": "#/components/responses/Error"}, "503": {"$ref": "#/components/responses/Error"}, "504": {"$ref": "#/components/responses/Error"}}}},
    "/v1/models/{name}/embed": {"post": {"summary": "an image file to its pooled embedding", "parameters": [{"$ref": "#/components/parameters/name"},
        {"name": "normalize", "in": "query", "schema": {"type": "boolean"}}],
      "requestBody": {"required": true, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}, "image/jpeg": {"schema": {"type": "string", "format": "binary"}}, "image/png": {"schema": {"type": "string", "format": "binary"}}}},
      "responses": {"200": {"description": "the embedding: JSON floats, or little-endian float32 with Accept: application/octet-stream",
        "content": {"application/json": {"schema": {"type": "array", "items": {"type": "number"}}}, "application/octet-stream": {}}},
        "400": {"$ref": "#/components/responses/Error"}, "401": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"},
        "413": {"$ref": "#/components/responses/Error"}, "503": {"$ref": "#/components/responses/Error"}, "504": {"$ref": "#/components/responses/Error"}}}},
    "/openapi.json": {"get": {"summary": "this document", "responses": {"200": {"description": "OpenAPI 3", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
    "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}}
  }
}
"""#
