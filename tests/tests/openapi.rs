//! `/openapi.json` describes the server truthfully: a well-formed OpenAPI 3.1 document whose
//! operations are exactly the routes the server has, no more and no fewer.
//!
//! [`ROUTES`] is the one list to update when a route is added.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use serde_json::{json, Value};
use stay_tests::{Answer, Backend, StayServer};
use uuid::Uuid;

/// Every route of the server: (method, path template, the role whose token it is sent with).
const ROUTES: &[(&str, &str, Option<&str>)] = &[
    // Service endpoints.
    ("get", "/healthz", None),
    ("get", "/readyz", None),
    ("get", "/metrics", None),
    ("get", "/openapi.json", None),
    // The dashboard.
    ("get", "/", None),
    ("get", "/assets/{file}", None),
    // Commands.
    ("post", "/v1/rooms", Some("host")),
    ("patch", "/v1/rooms/{room_id}", Some("host")),
    ("delete", "/v1/rooms/{room_id}", Some("host")),
    ("post", "/v1/reservations", Some("guest")),
    ("post", "/v1/reservations/{reservation_id}/cancel", Some("admin")),
    ("post", "/v1/rooms/{room_id}/reviews", Some("guest")),
    ("post", "/v1/reviews/{review_id}/reply", Some("host")),
    // Operators.
    ("get", "/v1/admin/sagas", Some("admin")),
    ("get", "/v1/admin/sagas/{saga_id}", Some("admin")),
    ("post", "/v1/admin/sagas/{saga_id}/retry", Some("admin")),
    ("post", "/v1/admin/sagas/{saga_id}/skip", Some("admin")),
    ("get", "/v1/admin/payments", Some("admin")),
    // Queries.
    ("get", "/v1/rooms", None),
    ("get", "/v1/rooms/{room_id}", None),
    ("get", "/v1/rooms/{room_id}/reviews", None),
    ("get", "/v1/reservations/{reservation_id}", Some("admin")),
    ("get", "/v1/me/reservations", Some("guest")),
    ("get", "/v1/me/notifications", Some("guest")),
    ("get", "/v1/me/rooms/reservations", Some("host")),
    ("get", "/v1/me/live", Some("guest")),
    ("get", "/v1/live/rooms", None),
    ("get", "/v1/admin/projections", Some("admin")),
    ("post", "/v1/admin/projections/{name}/rebuild", Some("admin")),
    ("get", "/v1/admin/projections/{name}/dead-letters", Some("admin")),
    ("post", "/v1/admin/projections/{name}/dead-letters/{position}/retry", Some("admin")),
    ("post", "/v1/admin/projections/{name}/dead-letters/{position}/skip", Some("admin")),
    ("get", "/v1/admin/feed", Some("admin")),
    ("get", "/v1/admin/streams/{aggregate_type}/{aggregate_id}", Some("admin")),
    ("get", "/v1/admin/correlations/{correlation_id}", Some("admin")),
    ("get", "/v1/live", Some("admin")),
];

/// The routes that answer a stream of server-sent events that never ends: only their head is read.
const STREAMS: &[&str] = &["/v1/live", "/v1/live/rooms", "/v1/me/live"];

const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];

async fn document(server: &StayServer) -> Value {
    let answer = server.get("/openapi.json").await;
    assert_eq!(answer.status, 200, "GET /openapi.json: {}", answer.text);
    assert!(answer.header("content-type").starts_with("application/json"), "{:?}", answer.headers);
    assert!(answer.body.is_object(), "not a JSON object: {}", answer.text);
    answer.body
}

/// Every (method, path) → operation in the document.
fn operations(doc: &Value) -> BTreeMap<(String, String), Value> {
    let paths = doc["paths"].as_object().expect("`paths` is an object");
    let mut operations = BTreeMap::new();
    for (path, item) in paths {
        let item = item.as_object().unwrap_or_else(|| panic!("path item {path} is not an object"));
        for (key, operation) in item {
            if METHODS.contains(&key.as_str()) {
                operations.insert((key.clone(), path.clone()), operation.clone());
            }
        }
    }
    operations
}

/// The `{name}`s of a path template, checking the template is well formed.
fn template_params(path: &str) -> Vec<String> {
    assert!(path.starts_with('/'), "path {path:?} does not start with /");
    let mut names = Vec::new();
    for segment in path.split('/').skip(1) {
        assert!(!segment.is_empty() || path == "/", "path {path:?} has an empty segment");
        let opens = segment.matches('{').count();
        let closes = segment.matches('}').count();
        assert!(opens == closes && opens <= 1, "path {path:?}: segment {segment:?} is not a well-formed template");
        if opens == 1 {
            assert!(
                segment.starts_with('{') && segment.ends_with('}'),
                "path {path:?}: a parameter must be a whole segment, as {{name}}, not {segment:?}"
            );
            let name = &segment[1..segment.len() - 1];
            assert!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "path {path:?}: parameter name {name:?} is not a plain identifier"
            );
            assert!(!names.iter().any(|n| n == name), "path {path:?} names {name:?} twice");
            names.push(name.to_owned());
        }
        assert!(!segment.contains(':'), "path {path:?} uses axum's :param syntax instead of {{param}}");
        assert!(!segment.starts_with('*'), "path {path:?} uses a wildcard segment");
    }
    names
}

/// Every `$ref` anywhere in `value`, with where it was found.
fn refs(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if key == "$ref" {
                    out.push((at.to_owned(), child.as_str().unwrap_or("<not a string>").to_owned()));
                } else {
                    refs(child, &format!("{at}/{}", key.replace('~', "~0").replace('/', "~1")), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                refs(child, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_well_formed_and_lists_exactly_the_routes() {
    let server = StayServer::start(Backend::Sqlite).await;
    let doc = document(&server).await;

    // OpenAPI 3.1, with a title and a version.
    let version = doc["openapi"].as_str().unwrap_or("");
    assert!(version.starts_with("3.1."), "openapi is {:?}, not 3.1.x", doc["openapi"]);
    for field in ["title", "version"] {
        let value = doc["info"][field].as_str().unwrap_or("");
        assert!(!value.trim().is_empty(), "info.{field} is missing or empty: {:?}", doc["info"]);
    }

    // Every $ref points into the document, at something that exists.
    let mut found = Vec::new();
    refs(&doc, "", &mut found);
    assert!(!found.is_empty(), "no $ref at all: the schemas are not shared through components");
    let broken: Vec<String> = found
        .iter()
        .filter(|(_, target)| !target.starts_with("#/") || doc.pointer(&target[1..]).is_none())
        .map(|(at, target)| format!("{at}: $ref {target:?}"))
        .collect();
    assert!(broken.is_empty(), "$refs that do not resolve inside the document:\n{}", broken.join("\n"));

    let operations = operations(&doc);
    let mut problems = Vec::new();
    let mut operation_ids = BTreeSet::new();
    for ((method, path), operation) in &operations {
        let here = format!("{} {path}", method.to_uppercase());
        // Responses, at least one.
        match operation.get("responses").and_then(Value::as_object) {
            Some(responses) if !responses.is_empty() => {
                for (status, response) in responses {
                    let known = status == "default"
                        || (status.len() == 3 && status.chars().all(|c| c.is_ascii_digit() || c == 'X'));
                    if !known {
                        problems.push(format!("{here}: response key {status:?} is not a status code"));
                    }
                    if response.get("description").and_then(Value::as_str).is_none() && response.get("$ref").is_none() {
                        problems.push(format!("{here}: response {status} has no description"));
                    }
                }
            }
            _ => problems.push(format!("{here}: no responses")),
        }
        if let Some(id) = operation.get("operationId").and_then(Value::as_str) {
            if !operation_ids.insert(id.to_owned()) {
                problems.push(format!("{here}: operationId {id:?} is used twice"));
            }
        }
        // Path parameters: the template's names, each declared `in: path` and required, and no others.
        let in_template = template_params(path);
        let item_params = doc["paths"][path]["parameters"].as_array().cloned().unwrap_or_default();
        let op_params = operation.get("parameters").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut declared = BTreeSet::new();
        for param in item_params.iter().chain(&op_params) {
            let param = match param.get("$ref").and_then(Value::as_str) {
                Some(target) => doc.pointer(target.trim_start_matches('#')).cloned().unwrap_or(Value::Null),
                None => param.clone(),
            };
            if param.get("in").and_then(Value::as_str) != Some("path") {
                continue;
            }
            let name = param.get("name").and_then(Value::as_str).unwrap_or("").to_owned();
            if param.get("required") != Some(&Value::Bool(true)) {
                problems.push(format!("{here}: path parameter {name:?} is not required: true"));
            }
            if !in_template.contains(&name) {
                problems.push(format!("{here}: declares path parameter {name:?} that the template lacks"));
            }
            declared.insert(name);
        }
        for name in &in_template {
            if !declared.contains(name) {
                problems.push(format!("{here}: {{{name}}} is not declared as a path parameter"));
            }
        }
    }
    assert!(problems.is_empty(), "the document's operations are not well formed:\n{}", problems.join("\n"));

    // Exactly the routes of the server.
    let documented: BTreeSet<(String, String)> = operations.keys().cloned().collect();
    let expected: BTreeSet<(String, String)> =
        ROUTES.iter().map(|(method, path, _)| ((*method).to_owned(), (*path).to_owned())).collect();
    let missing: Vec<_> = expected.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the document's routes differ from the expected list (update ROUTES in tests/tests/openapi.rs when adding one)\n\
         missing from the document: {missing:?}\nnot in the expected list: {extra:?}"
    );
}

/// The statuses an operation documents.
fn documented(operation: &Value) -> BTreeSet<u16> {
    let responses = operation["responses"].as_object().cloned().unwrap_or_default();
    responses.keys().filter_map(|status| status.parse().ok()).collect()
}

/// The operation's parameters (resolving `$ref`s), by name.
fn parameters(doc: &Value, operation: &Value) -> BTreeMap<String, Value> {
    let resolve = |param: &Value| match param.get("$ref").and_then(Value::as_str) {
        Some(target) => doc.pointer(target.trim_start_matches('#')).cloned().unwrap_or(Value::Null),
        None => param.clone(),
    };
    let list = operation["parameters"].as_array().cloned().unwrap_or_default();
    list.iter().map(resolve).map(|p| (p["name"].as_str().unwrap_or("").to_owned(), p)).collect()
}

/// Fills a path template's parameters with fresh UUIDs.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|segment| if segment.starts_with('{') { Uuid::new_v4().to_string() } else { segment.to_owned() })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_exists_and_nothing_else_does() {
    let server = StayServer::start(Backend::Sqlite).await;
    let doc = document(&server).await;
    let operations = operations(&doc);
    assert!(!operations.is_empty(), "the document lists no operations");

    let mut failures = Vec::new();
    for (method, path) in operations.keys() {
        let role = ROUTES.iter().find(|(m, p, _)| m == method && p == path).and_then(|(_, _, role)| *role);
        let token = role.map(|role| server.token(&format!("openapi-{role}"), role));
        let http_method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let body = matches!(http_method, Method::POST | Method::PATCH | Method::PUT).then(|| json!({}));
        let url = concrete(path);
        if STREAMS.contains(&path.as_str()) {
            // A stream that never ends: look at its head only.
            let (status, content_type, _) = server.open(&url, token.as_deref(), &[]).await;
            if status != 200 || !content_type.starts_with("text/event-stream") {
                failures.push(format!("GET {url}: {status} {content_type}"));
            }
            continue;
        }
        let answer: Answer = server.send(http_method.clone(), &url, token.as_deref(), body.as_ref(), &[]).await;
        let unrouted = (answer.status == 404 && answer.code() == "route_not_found") || answer.status == 405;
        if unrouted || answer.status >= 500 {
            failures.push(format!("{http_method} {url} (documented as {path}): {} {}", answer.status, answer.text));
        }
        if !documented(&operations[&(method.clone(), path.clone())]).contains(&answer.status) {
            failures
                .push(format!("{http_method} {url}: {} is not a documented status: {}", answer.status, answer.text));
        }
        if !(200..300).contains(&answer.status) && !answer.is_problem() && path.starts_with("/v1/") {
            failures.push(format!(
                "{http_method} {url}: a {} that is not a problem document: {}",
                answer.status, answer.text
            ));
        }
    }
    assert!(failures.is_empty(), "documented routes the server does not have:\n{}", failures.join("\n"));

    // Undocumented paths are unknown routes, answered as problems.
    let host = server.token("openapi-host", "host");
    for (method, path) in [
        (Method::GET, "/v1/nope"),
        (Method::POST, "/v1/nope"),
        (Method::GET, "/v1"),
        (Method::GET, "/assets"),
        (Method::POST, "/v1/rooms/x/y/z"),
        (Method::GET, "/openapi.yaml"),
        (Method::GET, "/v2/rooms"),
    ] {
        let answer = server.send(method.clone(), path, Some(&host), None, &[]).await;
        assert!(
            answer.status == 404 && answer.code() == "route_not_found" && answer.is_problem(),
            "{method} {path}: expected a 404 route_not_found problem, got {} {:?} {}",
            answer.status,
            answer.header("content-type"),
            answer.text
        );
    }
}

/// What the probes of one operation send: extra query, headers, body and token.
struct Probe {
    label: &'static str,
    query: String,
    headers: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    token: Option<String>,
}

/// Requests each route can be refused for by a layer or an extractor rather than its handler.
fn probes(doc: &Value, method: &str, operation: &Value, server: &StayServer) -> Vec<Probe> {
    let secured = operation["security"].as_array().is_some_and(|s| !s.is_empty());
    let params = parameters(doc, operation);
    let has_body = operation.get("requestBody").is_some();
    let probe = |label, query: &str, body: Option<&[u8]>, token: Option<String>| Probe {
        label,
        query: query.to_owned(),
        headers: Vec::new(),
        body: body.map(<[u8]>::to_vec),
        token,
    };
    let mut out = Vec::new();
    for role in ["guest", "host", "admin"] {
        out.push(probe("a token of each role", "", has_body.then_some(b"{}"), Some(server.token("probe-1", role))));
    }
    let any = || Some(server.token("probe-1", "admin"));
    if secured {
        out.push(probe("no token", "", None, None));
        let expired = server.token("probe-1", "guest").replace('.', ".x");
        out.push(probe("a broken token", "", None, Some(expired)));
    }
    if has_body {
        for role in ["guest", "host", "admin"] {
            let token = Some(server.token("probe-1", role));
            out.push(probe("malformed JSON", "", Some(br#"{"name":"#), token.clone()));
            out.push(probe("a body too large", "", Some(&vec![b' '; 100 * 1024]), token.clone()));
            let mut text = probe("a body that is not JSON", "", Some(b"name=x"), token.clone());
            text.headers.push(("content-type", "text/plain".to_owned()));
            out.push(text);
            out.push(probe("the wrong JSON", "", Some(b"[1, 2]"), token));
        }
    }
    if ["post", "patch", "delete"].contains(&method) && secured {
        for role in ["guest", "host", "admin"] {
            let mut keyed = probe(
                "a malformed Idempotency-Key",
                "",
                has_body.then_some(b"{}"),
                Some(server.token("probe-1", role)),
            );
            keyed.headers.push(("idempotency-key", "k".repeat(201)));
            out.push(keyed);
        }
    }
    for (name, bad) in [
        ("limit", "many"),
        ("cursor", "garbage"),
        ("after", "garbage"),
        ("min_position", "garbage"),
        ("wait_ms", "-1"),
        ("as_of", "yesterday"),
        ("status", "sleeping"),
        ("reservation_id", "nope"),
    ] {
        if params.contains_key(name) {
            out.push(probe("a parameter of the wrong shape", &format!("{name}={bad}"), None, any()));
        }
    }
    if params.contains_key("min_position") {
        out.push(probe("a position not reached", "min_position=999999999&wait_ms=1", None, any()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_status_a_route_answers_is_documented() {
    let server = StayServer::start(Backend::Sqlite).await;
    let doc = document(&server).await;
    let mut undocumented = Vec::new();
    let mut sent = 0;
    for ((method, path), operation) in operations(&doc) {
        if STREAMS.contains(&path.as_str()) || !path.starts_with("/v1/") {
            continue;
        }
        let statuses = documented(&operation);
        let http_method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        for probe in probes(&doc, &method, &operation, &server) {
            let url = match probe.query.as_str() {
                "" => concrete(&path),
                query => format!("{}?{query}", concrete(&path)),
            };
            let headers: Vec<(&str, &str)> = probe.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let answer = server.send_raw(http_method.clone(), &url, probe.token.as_deref(), probe.body, &headers).await;
            sent += 1;
            // A 5xx other than 504 `projection_behind` is a server failure, documented or not.
            let failed = answer.status >= 500 && answer.status != 504;
            if failed || !statuses.contains(&answer.status) || (answer.status >= 300 && !answer.is_problem()) {
                undocumented.push(format!(
                    "{} {url} ({}): {} {} — documented: {statuses:?}",
                    method.to_uppercase(),
                    probe.label,
                    answer.status,
                    answer.text.chars().take(300).collect::<String>()
                ));
            }
        }
    }
    assert!(sent > 100, "only {sent} probes");
    assert!(undocumented.is_empty(), "answers the document does not list:\n{}", undocumented.join("\n"));
}

/// The schema a `$ref` (or a nullable `oneOf` of one) stands for.
fn resolve<'d>(doc: &'d Value, schema: &'d Value) -> &'d Value {
    if let Some(target) = schema.get("$ref").and_then(Value::as_str) {
        return doc.pointer(target.trim_start_matches('#')).map_or(schema, |s| resolve(doc, s));
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(branches) = schema.get(key).and_then(Value::as_array) {
            if let Some(branch) = branches.iter().find(|b| b.get("type") != Some(&json!("null"))) {
                return resolve(doc, branch);
            }
        }
    }
    schema
}

/// Whether a schema's `type` is (or includes) `kind`.
fn is(schema: &Value, kind: &str) -> bool {
    match &schema["type"] {
        Value::String(t) => t == kind,
        Value::Array(types) => types.iter().any(|t| t == kind),
        _ => false,
    }
}

/// Every leaf property of a request body: (dotted path, its schema).
fn leaves(doc: &Value, schema: &Value, prefix: &str, out: &mut Vec<(String, Value)>) {
    let schema = resolve(doc, schema);
    match schema.get("properties").and_then(Value::as_object) {
        Some(properties) => {
            for (name, property) in properties {
                let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
                leaves(doc, property, &path, out);
            }
        }
        None => out.push((prefix.to_owned(), schema.clone())),
    }
}

/// The request body schemas of the document: (method, path) → leaves.
fn request_bodies(doc: &Value) -> BTreeMap<(String, String), Vec<(String, Value)>> {
    let mut bodies = BTreeMap::new();
    for ((method, path), operation) in operations(doc) {
        if let Some(schema) = operation["requestBody"]["content"]["application/json"].get("schema") {
            let mut found = Vec::new();
            leaves(doc, schema, "", &mut found);
            bodies.insert((method, path), found);
        }
    }
    bodies
}

/// A string whose shape is fixed by a format or an anchored pattern (a date, a UUID, a currency).
fn shaped(schema: &Value) -> bool {
    schema.get("format").is_some() || schema["pattern"].as_str().is_some_and(|p| p.starts_with('^'))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_schemas_state_their_bounds() {
    let server = StayServer::start(Backend::Sqlite).await;
    let doc = document(&server).await;
    let bodies = request_bodies(&doc);
    assert!(bodies.len() >= 5, "request bodies: {:?}", bodies.keys());
    let mut unbounded = Vec::new();
    for ((method, path), fields) in &bodies {
        for (field, schema) in fields {
            let here = format!("{} {path} {field}", method.to_uppercase());
            if is(schema, "string") && schema.get("maxLength").is_none() && !shaped(schema) {
                unbounded.push(format!("{here}: a string without maxLength, format or anchored pattern"));
            }
            if is(schema, "integer") && schema.get("minimum").is_none() {
                unbounded.push(format!("{here}: an integer without minimum"));
            }
        }
    }
    for ((_, path), operation) in operations(&doc) {
        // The saga crate's ledger route (an integer cursor) is left to that crate to state.
        if path == "/v1/admin/payments" {
            continue;
        }
        for (name, param) in parameters(&doc, &operation) {
            if ["cursor", "after", "min_position"].contains(&name.as_str()) && param["schema"].get("pattern").is_none()
            {
                unbounded.push(format!("{path} ?{name}: no pattern"));
            }
        }
    }
    assert!(unbounded.is_empty(), "request schemas that do not state the server's bounds:\n{}", unbounded.join("\n"));
    let currency = &doc["components"]["schemas"]["PriceBody"]["properties"]["currency"];
    assert_eq!(currency["pattern"], "^[A-Z]{3}$", "{currency}");
    let check_in = resolve(&doc, &doc["components"]["schemas"]["RequestReservationRequest"]["properties"]["check_in"]);
    assert_eq!((&check_in["format"], &check_in["pattern"]), (&json!("date"), &json!(r"^\d{4}-\d{2}-\d{2}$")));
}

/// Whether a 422 names `field` or a field that holds it (`nightly_price` for `nightly_price.currency`).
fn names(answer: &Answer, field: &str) -> bool {
    answer.status == 422
        && answer.body["errors"].as_array().into_iter().flatten().any(|error| {
            let named = error["field"].as_str().unwrap_or("");
            field == named || field.starts_with(&format!("{named}."))
        })
}

/// `body` with the value at dotted `path` replaced.
fn with(body: &Value, path: &str, value: Value) -> Value {
    let mut body = body.clone();
    let pointer = format!("/{}", path.replace('.', "/"));
    *body.pointer_mut(&pointer).unwrap_or_else(|| panic!("the template has no {path}")) = value;
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bounds_the_document_states_are_the_bounds_the_server_keeps() {
    let server = StayServer::start(Backend::Sqlite).await;
    let doc = document(&server).await;
    let host = server.token("host-1", "host");
    let guest = server.token("guest-1", "guest");
    let room = json!({
        "name": "Probe room", "description": "", "address": "1 Probe Street",
        "nightly_price": {"amount_minor": 10_000, "currency": "EUR"}, "capacity": 4,
    });
    let created = server.post("/v1/rooms", &host, &room).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let room_id = created.field("room_id").to_owned();
    let check_in = chrono::Utc::now().date_naive() + chrono::Days::new(30);
    let reservation = json!({
        "room_id": room_id, "check_in": check_in.to_string(), "check_out": (check_in + chrono::Days::new(2)).to_string(),
        "guests": 1, "payment": {"card_token": "tok_visa"},
    });
    let review = json!({"reservation_id": Uuid::new_v4().to_string(), "rating": 4, "comment": "Fine."});
    let routes = [
        ("post", "/v1/rooms", "/v1/rooms".to_owned(), &host, room.clone()),
        ("patch", "/v1/rooms/{room_id}", format!("/v1/rooms/{room_id}"), &host, room.clone()),
        ("post", "/v1/reservations", "/v1/reservations".to_owned(), &guest, reservation),
        ("post", "/v1/rooms/{room_id}/reviews", format!("/v1/rooms/{room_id}/reviews"), &guest, review),
        (
            "post",
            "/v1/reviews/{review_id}/reply",
            format!("/v1/reviews/{}/reply", Uuid::new_v4()),
            &host,
            json!({"comment": "Thanks."}),
        ),
    ];
    let bodies = request_bodies(&doc);
    let mut disagreements = Vec::new();
    let mut probed = 0;
    for (method, template, url, token, base) in routes {
        let fields = bodies.get(&(method.to_owned(), template.to_owned())).unwrap_or_else(|| panic!("{template}"));
        let http_method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let check = |field: &str, value: Value, refused: bool| {
            let body = with(&base, field, value.clone());
            let server = &server;
            let (http_method, url, token) = (http_method.clone(), url.clone(), token.clone());
            let field = field.to_owned();
            async move {
                let answer = server.send(http_method, &url, Some(&token), Some(&body), &[]).await;
                let shown: String = value.to_string().chars().take(40).collect();
                match (refused, names(&answer, &field)) {
                    (true, false) => Some(format!(
                        "{url} {field} = {shown}…: out of the stated bounds, yet {} {}",
                        answer.status, answer.text
                    )),
                    (false, true) => {
                        Some(format!("{url} {field} = {shown}…: within the stated bounds, yet {}", answer.text))
                    }
                    _ => None,
                }
            }
        };
        for (field, schema) in fields {
            if is(schema, "string") && !shaped(schema) {
                if let Some(max) = schema["maxLength"].as_u64().and_then(|m| usize::try_from(m).ok()) {
                    probed += 2;
                    disagreements.extend(check(field, json!("ü".repeat(max)), false).await);
                    disagreements.extend(check(field, json!("ü".repeat(max + 1)), true).await);
                }
                if schema["minLength"].as_u64().is_some_and(|min| min >= 1) {
                    probed += 1;
                    disagreements.extend(check(field, json!(""), true).await);
                }
            }
            if is(schema, "integer") {
                if let Some(min) = schema["minimum"].as_i64() {
                    probed += 2;
                    disagreements.extend(check(field, json!(min), false).await);
                    disagreements.extend(check(field, json!(min - 1), true).await);
                }
                if let Some(max) = schema["maximum"].as_i64() {
                    probed += 2;
                    disagreements.extend(check(field, json!(max), false).await);
                    disagreements.extend(check(field, json!(max + 1), true).await);
                }
            }
        }
    }
    assert!(probed >= 20, "only {probed} bounds probed");
    assert!(disagreements.is_empty(), "the document and the server disagree:\n{}", disagreements.join("\n"));
}
