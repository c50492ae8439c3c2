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
    serde_json::json!({
        "openapi": "3.0.3",
        "info": {
            "title": "renkei",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Webhook ingress and the admin API of renkei. Admin endpoints need `Authorization: Bearer <token>`: `server.admin_token` (an admin) or a token made with `renkei token create`, whose role decides what it may do (viewer: read; editor: also retry, replay, connection tests; admin: also the audit log); a route its role does not allow answers 403 naming the role needed. Errors are `{\"error\": {\"code\", \"message\"}}`, in Japanese when `Accept-Language` asks for it."
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
    })
}
