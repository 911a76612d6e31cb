//! `GET /api/openapi.json` describes exactly what the gateway serves: every route of the
//! router (and of the routes answered before it) is documented, and every documented operation is served (not answered by the
//! gateway's 404/405 fallbacks), while undocumented methods get 405. The docs page's own files
//! are the one deliberate exception (`UNDOCUMENTED`).

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use serde_json::Value;

use super::*;

/// The sources that register the gateway's routes: its own router and the probes from common.
const ROUTER_SOURCES: [&str; 2] = [
    include_str!("../../src/routes/mod.rs"),
    include_str!("../../../common/src/health.rs"),
];

/// The sources of the routes answered before the router (`common::server::DirectRoutes`):
/// their templates are the `&str` constants there.
const DIRECT_ROUTE_SOURCES: [&str; 1] = [include_str!("../../src/routes/movies.rs")];

/// Routes served on purpose without being in the document: the docs page's own scripts and
/// styles, which are not part of the API.
const UNDOCUMENTED: [&str; 1] = ["/api/docs/{}"];

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];

/// `/api/movies/{id}` and `/api/movies/{*rest}` both become `/api/movies/{}`.
fn normalize(template: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "{}"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Every path template passed to `.route("...")` in the router's sources, and every template
/// of the direct routes.
fn router_paths() -> BTreeSet<String> {
    let routed = ROUTER_SOURCES
        .iter()
        .flat_map(|source| source.split(".route(").skip(1));
    let direct = DIRECT_ROUTE_SOURCES
        .iter()
        .flat_map(|source| source.split(": &str = ").skip(1));
    routed
        .chain(direct)
        .filter_map(|call| call.trim_start().strip_prefix('"')?.split('"').next())
        .map(normalize)
        .filter(|path| !UNDOCUMENTED.contains(&path.as_str()))
        .collect()
}

/// Documented methods per path template.
fn documented(document: &Value) -> BTreeMap<String, BTreeSet<String>> {
    document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .map(|(path, item)| {
            let methods = item
                .as_object()
                .unwrap()
                .keys()
                .filter(|key| *key != "parameters")
                .map(|method| method.to_uppercase())
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

/// A concrete path for a template.
fn sample(template: &str) -> String {
    template
        .replace("{id}", "1")
        .replace("{order_id}", "00000000-0000-0000-0000-000000000001")
}

/// Whether the gateway's own fallbacks produced this answer: the route is not served.
fn is_fallback(status: u16, body: &Value) -> bool {
    status == 405 || (status == 404 && body["error"] == "no such route")
}

#[tokio::test]
async fn the_document_and_the_router_match_both_ways() {
    let stack = start_stack().await;
    let gateway = &stack.gateway;

    let response = reqwest::get(format!("{}/api/openapi.json", gateway.url()))
        .await
        .unwrap();
    let (status, document) = json_of(response).await;
    assert_eq!(status, 200);
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let documented = documented(&document);

    let documented_paths: BTreeSet<String> = documented.keys().map(|p| normalize(p)).collect();
    assert_eq!(
        router_paths(),
        documented_paths,
        "router paths vs documented paths"
    );

    let http = reqwest::Client::new();
    for (template, methods) in &documented {
        for method in METHODS {
            let url = format!("{}{}", gateway.url(), sample(template));
            let response = http
                .request(Method::from_bytes(method.as_bytes()).unwrap(), &url)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if methods.contains(method) {
                assert!(
                    !is_fallback(status, &body),
                    "{method} {template} is documented but not served: {status} {body}"
                );
            } else {
                assert_eq!(
                    status, 405,
                    "{method} {template} is served but not documented: {body}"
                );
            }
        }
    }
}

#[tokio::test]
async fn the_docs_page_and_every_file_it_loads_are_served_by_the_gateway_itself() {
    let gateway = gateway_alone(no_broker()).await;
    let page = reqwest::get(format!("{}/api/docs/", gateway.url()))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = page.text().await.unwrap();
    let files: Vec<&str> = page
        .split(['"', '\''])
        .filter(|part| part.starts_with("/api/docs/"))
        .collect();
    assert!(files.len() >= 4, "{page}");
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "{page}"
    );
    for file in files {
        let response = reqwest::get(format!("{}{file}", gateway.url()))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{file}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let expected = match file.rsplit('.').next() {
            Some("css") => "text/css",
            Some("js") => "text/javascript",
            Some("png") => "image/png",
            other => panic!("unexpected file {file} ({other:?})"),
        };
        assert_eq!(content_type, expected, "{file}");
        let body = response.text().await.unwrap_or_default();
        if file.ends_with("swagger-initializer.js") {
            assert!(body.contains("\"/api/openapi.json\""), "{body}");
            assert!(body.contains("\"validatorUrl\": \"none\""), "{body}");
        }
    }
    let missing = reqwest::get(format!("{}/api/docs/nothing.js", gateway.url()))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}
