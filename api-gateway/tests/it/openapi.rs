//! `GET /api/openapi.json` describes exactly what the gateway serves: every route of the
//! router is documented, and every documented operation is served (not answered by the
//! gateway's 404/405 fallbacks), while undocumented methods get 405.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use serde_json::Value;

use super::*;

/// The sources that register the gateway's routes: its own router and the probes from common.
const ROUTER_SOURCES: [&str; 2] = [
    include_str!("../../src/routes/mod.rs"),
    include_str!("../../../common/src/health.rs"),
];

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

/// Every path template passed to `.route("...")` in the router's sources.
fn router_paths() -> BTreeSet<String> {
    ROUTER_SOURCES
        .iter()
        .flat_map(|source| source.split(".route(").skip(1))
        .filter_map(|call| call.trim_start().strip_prefix('"')?.split('"').next())
        .map(normalize)
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
