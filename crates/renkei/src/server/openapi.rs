//! The OpenAPI document of `/api/v1` and `/hooks`, served at `/api/v1/openapi.json`.
//!
//! Written by hand next to the routes it describes; a test checks that every route is in it.

use axum::Json;

pub async fn document() -> Json<serde_json::Value> {
    Json(spec())
}

pub fn spec() -> serde_json::Value {
    let error = serde_json::json!({ "$ref": "#/components/schemas/Error" });
    let list_params = |names: &[&str]| -> Vec<serde_json::Value> {
        names
            .iter()
            .map(|n| serde_json::json!({ "name": n, "in": "query", "required": false, "schema": { "type": "string" } }))
            .collect()
    };
    let id_param =
        |kind: &str| serde_json::json!([{ "name": "id", "in": "path", "required": true, "schema": { "type": kind } }]);
    let ok = |desc: &str| serde_json::json!({ "description": desc, "content": { "application/json": { "schema": { "type": "object" } } } });
    let err =
        |desc: &str| serde_json::json!({ "description": desc, "content": { "application/json": { "schema": error } } });
    // The config, tokens and users (a second literal: one would pass serde_json's macro recursion limit).
    let admin_paths = serde_json::json!({
            "/api/v1/config": {
                "get": { "summary": "The running config (YAML, secrets masked) and its revision", "responses": { "200": ok("`{revision, text}`") } },
                "put": { "summary": "Replace the whole config (admin): checked whole, kept as a revision, run by every node; `[REDACTED]` keeps a secret", "requestBody": { "content": { "application/json": { "schema": { "type": "object", "required": ["text"], "properties": { "text": { "type": "string" }, "base": { "type": "integer" } } } } } }, "responses": { "200": ok("`{revision}`"), "403": err("Not an admin"), "409": err("Another edit came first"), "422": err("The config would not load: `problems` with path, line and message") } }
            },
            "/api/v1/config/revisions": { "get": { "summary": "Config revisions, newest first: id, when, origin, running (admin)", "responses": { "200": ok("`{items}`"), "403": err("Not an admin") } } },
            "/api/v1/config/{section}": { "get": { "summary": "Names of the items of sources, destinations, flows, tables or subscriptions", "parameters": [{ "name": "section", "in": "path", "required": true, "schema": { "type": "string" } }], "responses": { "200": ok("`{revision, section, items}`"), "400": err("Not a section of named items") } } },
            "/api/v1/config/{section}/{name}": {
                "parameters": [{ "name": "section", "in": "path", "required": true, "schema": { "type": "string" } }, { "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }],
                "get": { "summary": "One item's YAML as written, secrets masked", "responses": { "200": ok("`{revision, section, name, text}`"), "404": err("No such item") } },
                "put": { "summary": "Create (201) or replace (200) one item (editor: destinations, flows, tables; admin: sources, subscriptions)", "requestBody": { "content": { "application/json": { "schema": { "type": "object", "required": ["text"], "properties": { "text": { "type": "string" }, "base": { "type": "integer" } } } } } }, "responses": { "200": ok("`{revision}`"), "201": ok("`{revision}`"), "403": err("Role too low for this section"), "409": err("Another edit came first"), "422": err("The config would not load, or a mask on a changed line") } },
                "delete": { "summary": "Remove one item (422 while something uses it)", "responses": { "200": ok("`{revision}`"), "404": err("No such item"), "422": err("Still used") } }
            },
            "/api/v1/tokens": {
                "get": { "summary": "API tokens: name, role, created, expires (admin)", "responses": { "200": ok("`{items}`"), "403": err("Not an admin") } },
                "post": { "summary": "Create a token; the answer holds it, once (admin)", "requestBody": { "content": { "application/json": { "schema": { "type": "object", "required": ["name", "role"], "properties": { "name": { "type": "string" }, "role": { "type": "string", "enum": ["viewer", "editor", "admin"] }, "expires": { "type": "string", "example": "30d" } } } } } }, "responses": { "201": ok("`{name, role, expires_at, token}`"), "400": err("Bad name, role or expiry"), "409": err("Name taken") } }
            },
            "/api/v1/tokens/{name}": { "delete": { "summary": "Revoke a token (admin)", "parameters": [{ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }], "responses": { "204": { "description": "revoked" }, "404": err("No such token") } } },
            "/api/v1/users": {
                "get": { "summary": "Console users: name, role, created (admin)", "responses": { "200": ok("`{items}`") } },
                "post": { "summary": "Add a console user with a password of 12 or more characters (admin)", "requestBody": { "content": { "application/json": { "schema": { "type": "object", "required": ["name", "role", "password"], "properties": { "name": { "type": "string" }, "role": { "type": "string" }, "password": { "type": "string" } } } } } }, "responses": { "201": { "description": "added" }, "400": err("Bad name, role or password"), "409": err("Name taken") } }
            },
            "/api/v1/users/{name}": { "delete": { "summary": "Remove a console user (admin)", "parameters": [{ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }], "responses": { "204": { "description": "removed" }, "404": err("No such user") } } }
    });
    let mut doc = serde_json::json!({
        "openapi": "3.0.3",
        "info": {
            "title": "renkei",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Webhook ingress and the admin API of renkei. Admin endpoints need `Authorization: Bearer <token>`: `server.admin_token` (an admin) or a token made with `renkei token create` or `POST /api/v1/tokens`, whose role decides what it may do (viewer: read; editor: also retry, replay, connection tests, and edit destinations, flows and tables; admin: also sources, subscriptions, the whole config, tokens, users and the audit log); a route its role does not allow answers 403 naming the role needed. Errors are `{\"error\": {\"code\", \"message\"}}`, in Japanese when `Accept-Language` asks for it."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": { "type": "object", "properties": { "error": { "type": "object", "properties": { "code": { "type": "string" }, "message": { "type": "string" } } } } }
            }
        },
        "security": [{ "bearer": [] }],
        "paths": {
            "/hooks/{source}": { "post": {
                "summary": "Receive a webhook or file for a source",
                "security": [],
                "parameters": [{ "name": "source", "in": "path", "required": true, "schema": { "type": "string" } },
                               { "name": "token", "in": "query", "required": false, "schema": { "type": "string" } }],
                "requestBody": { "content": { "application/json": {}, "application/x-www-form-urlencoded": {}, "text/csv": {}, "text/plain": {} } },
                "responses": {
                    "202": ok("Stored: `{\"event_id\"}` (with `\"duplicate\": true` for a repeat)"),
                    "207": ok("A split file: one result per row"),
                    "400": err("Malformed body"), "401": err("Bad credentials"), "404": err("Unknown source"),
                    "413": err("Body too large"), "415": err("Unsupported content type"), "503": err("Storage unavailable: nothing stored")
                }
            }},
            "/api/v1/events": { "get": { "summary": "List events, newest first", "parameters": list_params(&["source", "type", "status", "since", "until", "q", "before", "limit"]), "responses": { "200": ok("`{items, next_before}`"), "401": err("No or wrong token") } } },
            "/api/v1/events/{id}": { "get": { "summary": "One event with its deliveries", "parameters": id_param("string"), "responses": { "200": ok("The event"), "404": err("Not found") } } },
            "/api/v1/events/{id}/replay": { "post": { "summary": "Run an event through the current flows again (editor)", "parameters": id_param("string"), "responses": { "403": err("Needs the editor role"), "202": ok("`{event_id, delivery_ids}`"), "404": err("Not found"), "409": err("Rejected event") } } },
            "/api/v1/deliveries": { "get": { "summary": "List deliveries with their last error, newest first", "parameters": list_params(&["flow", "source", "status", "event_id", "since", "until", "q", "before", "limit"]), "responses": { "200": ok("`{items, next_before}`") } } },
            "/api/v1/deliveries/{id}": { "get": { "summary": "One delivery with every attempt's request and response", "parameters": id_param("integer"), "responses": { "200": ok("The delivery"), "404": err("Not found") } } },
            "/api/v1/deliveries/{id}/retry": { "post": { "summary": "Retry a dead or retrying delivery now (editor)", "parameters": id_param("integer"), "responses": { "403": err("Needs the editor role"), "202": ok("The delivery"), "404": err("Not found"), "409": err("Not dead or retrying") } } },
            "/api/v1/deliveries/retry": { "post": { "summary": "Retry every dead delivery matching a filter (editor)", "requestBody": { "content": { "application/json": { "schema": { "type": "object", "properties": { "flow": { "type": "string" }, "source": { "type": "string" }, "since": { "type": "string" }, "until": { "type": "string" }, "q": { "type": "string" } } } } } }, "responses": { "403": err("Needs the editor role"), "200": ok("`{retried}`") } } },
            "/api/v1/attempts": { "get": { "summary": "List attempts", "parameters": list_params(&["delivery_id", "flow", "outcome", "since", "before", "limit"]), "responses": { "200": ok("`{items, next_before}`") } } },
            "/api/v1/queue": { "get": { "summary": "Queue depth and the oldest open delivery", "responses": { "200": ok("Queue figures") } } },
            "/api/v1/destinations": { "get": { "summary": "Configured destinations (no credentials)", "responses": { "200": ok("`{items}`") } } },
            "/api/v1/destinations/{id}/test": { "post": { "summary": "Connection test: reachable; for kintone the app, its fields and the token's rights (writes nothing) (editor)", "parameters": id_param("string"), "responses": { "403": err("Needs the editor role"), "200": ok("`{destination, ok, checks, fields}`"), "404": err("Not found") } } },
            "/api/v1/audit": { "get": { "summary": "The audit log, newest first: who, when, what (admin)", "parameters": list_params(&["actor", "action", "since", "before", "limit"]), "responses": { "200": ok("`{items, next_before}`"), "403": err("Not an admin") } } },
            "/api/v1/kintone/usage": { "get": { "summary": "kintone requests sent today (JST), per destination and app", "responses": { "200": ok("`{items}`") } } },
            "/api/v1/openapi.json": { "get": { "summary": "This document", "security": [], "responses": { "200": ok("OpenAPI 3") } } },
            "/healthz": { "get": { "summary": "Liveness", "security": [], "responses": { "200": { "description": "ok" } } } },
            "/readyz": { "get": { "summary": "Readiness: the store answers", "security": [], "responses": { "200": { "description": "ready" }, "503": { "description": "storage unavailable" } } } },
            "/metrics": { "get": { "summary": "Prometheus metrics", "security": [], "responses": { "200": { "description": "text exposition" } } } }
        }
    });
    if let (Some(paths), serde_json::Value::Object(more)) = (doc["paths"].as_object_mut(), admin_paths) {
        paths.extend(more);
    }
    doc
}
