//! The refusals whole kinds of routes share, written into the OpenAPI document in one place.
//!
//! A refusal that comes from a layer or an extractor rather than from the handler (no token, a body
//! that is not JSON, a query parameter of the wrong type, overload) can be answered by every route
//! of its kind. Rather than repeat them in every handler's annotation, where a new route could
//! forget one, [`document_shared_refusals`] adds them to each operation that has the trait that
//! causes them: a security requirement, a request body, query parameters, a `min_position`.

use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Response};

use crate::problem::PROBLEM_JSON;

/// Every operation of a path.
pub fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// Documents that `operation` may answer `status` with a problem document, as `description`
/// says; a status it already documents gets the description added unless it says so already.
pub fn document_refusal(operation: &mut Operation, status: u16, description: &str) {
    let responses = &mut operation.responses.responses;
    match responses.get_mut(&status.to_string()) {
        Some(RefOr::T(response)) => {
            if !response.description.contains(description) {
                response.description = format!("{}; {description}", response.description);
            }
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            let mut response = Response::new(description);
            let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
            response.content.insert(PROBLEM_JSON.to_owned(), content);
            responses.insert(status.to_string(), RefOr::T(response));
        }
    }
}

/// Whether `operation` takes a query parameter called `name`.
fn takes_query(operation: &Operation, name: Option<&str>) -> bool {
    operation
        .parameters
        .iter()
        .flatten()
        .any(|p| matches!(p.parameter_in, ParameterIn::Query) && name.is_none_or(|name| p.name == name))
}

/// Adds to every operation under `/v1/` the refusals its kind of route can give (see the module).
pub fn document_shared_refusals(openapi: &mut OpenApi) {
    for (path, item) in openapi.paths.paths.iter_mut() {
        if !path.starts_with("/v1/") {
            continue;
        }
        for operation in operations_mut(item) {
            if operation.security.as_ref().is_some_and(|requirements| !requirements.is_empty()) {
                document_refusal(operation, 401, "`unauthenticated`: no valid bearer token");
            }
            if operation.request_body.is_some() {
                document_refusal(operation, 400, "`malformed_json`, `unreadable_body`: the body is not JSON");
                document_refusal(operation, 413, "`body_too_large`");
                document_refusal(operation, 415, "`unsupported_media_type`: the body is not JSON");
                document_refusal(
                    operation,
                    422,
                    "`validation_failed`: a field is missing, unknown, of the wrong type or out of bounds",
                );
            }
            if takes_query(operation, None) {
                document_refusal(operation, 422, "`validation_failed`: a query parameter does not fit its type");
            }
            if takes_query(operation, Some("min_position")) {
                document_refusal(operation, 422, "`validation_failed`: `min_position` is not a position");
                document_refusal(
                    operation,
                    504,
                    "`projection_behind`: the read model did not reach `min_position` within `wait_ms`",
                );
            }
            document_refusal(
                operation,
                431,
                "`headers_too_large`: the request line and header fields are over 400 KiB, or there are over 100 \
                 header fields",
            );
            document_refusal(operation, 500, "`internal_error`: the server failed, not the request; retry it");
            document_refusal(
                operation,
                503,
                "`overloaded` (too many requests in flight) or `shutting_down`, with `Retry-After`: for \
                 `overloaded`, the server's estimate of when its backlog clears (requests in flight over \
                 completions per second in the last second, rounded up, 1 to 30 s)",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use utoipa::openapi::path::{OperationBuilder, ParameterBuilder, PathItem};
    use utoipa::openapi::request_body::RequestBody;
    use utoipa::openapi::security::SecurityRequirement;
    use utoipa::openapi::{HttpMethod, OpenApiBuilder, PathsBuilder};

    use super::*;

    fn statuses(doc: &OpenApi, path: &str) -> Vec<String> {
        let operation =
            doc.paths.paths[path].get.as_ref().or(doc.paths.paths[path].post.as_ref()).expect("an operation");
        operation.responses.responses.keys().cloned().collect()
    }

    #[test]
    fn each_kind_of_route_gets_the_refusals_of_its_kind() {
        let secured_post = OperationBuilder::new()
            .security(SecurityRequirement::new("bearer", Vec::<String>::new()))
            .request_body(Some(RequestBody::new()))
            .build();
        let fresh_read = OperationBuilder::new()
            .parameter(ParameterBuilder::new().name("min_position").parameter_in(ParameterIn::Query).build())
            .response("422", Response::new("Bad parameters"))
            .build();
        let paths = PathsBuilder::new()
            .path("/v1/things", PathItem::new(HttpMethod::Post, secured_post))
            .path("/v1/views", PathItem::new(HttpMethod::Get, fresh_read))
            .path("/healthz", PathItem::new(HttpMethod::Get, OperationBuilder::new().build()))
            .build();
        let mut doc = OpenApiBuilder::new().paths(paths).build();
        document_shared_refusals(&mut doc);
        assert_eq!(statuses(&doc, "/v1/things"), ["400", "401", "413", "415", "422", "431", "500", "503"]);
        assert_eq!(statuses(&doc, "/v1/views"), ["422", "431", "500", "503", "504"]);
        assert!(statuses(&doc, "/healthz").is_empty(), "only routes under /v1 are bounded and refused so");
        let views = doc.paths.paths["/v1/views"].get.as_ref().expect("get");
        let RefOr::T(bad) = &views.responses.responses["422"] else { panic!("inline") };
        assert!(bad.description.starts_with("Bad parameters; ") && bad.description.contains("min_position"));
    }
}
