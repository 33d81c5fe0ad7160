//! The route table, compiled once at start-up: `{name}` templates matched with matchit.
//!
//! A path may carry one WebSocket route and HTTP routes for several methods. Paths are
//! percent-decoded before matching, as Starlette does.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::ratelimit::RateLimits;

#[derive(Default)]
pub struct Endpoints {
    pub websocket: Option<usize>,
    /// The limits the WebSocket route sets for itself (each replaces the server's).
    pub websocket_limits: RateLimits,
    pub http: Vec<(String, usize)>,
}

/// One route as Python hands it over: (template, kind, methods, id, limits).
pub type RouteSpec = (String, String, Vec<String>, usize, HashMap<String, f64>);

pub struct Routes {
    table: matchit::Router<usize>,
    endpoints: Vec<Endpoints>,
}

pub struct Found<'a> {
    pub endpoints: &'a Endpoints,
    pub params: Vec<(String, String)>,
}

impl Routes {
    /// `routes`: (template, "websocket" | "http", methods, route id, the route's limits by
    /// name, see `RateLimits::from_route`).
    pub fn build(routes: Vec<RouteSpec>) -> Result<Self, String> {
        let mut table = matchit::Router::new();
        let mut endpoints: Vec<Endpoints> = Vec::new();
        let mut templates: Vec<String> = Vec::new();
        for (template, kind, methods, id, limits) in routes {
            let index = match templates.iter().position(|t| *t == template) {
                Some(index) => index,
                None => {
                    table
                        .insert(template.clone(), endpoints.len())
                        .map_err(|e| format!("route {template:?}: {e}"))?;
                    templates.push(template.clone());
                    endpoints.push(Endpoints::default());
                    endpoints.len() - 1
                }
            };
            let entry = &mut endpoints[index];
            match kind.as_str() {
                "websocket" => {
                    if entry.websocket.is_none() {
                        entry.websocket = Some(id);
                        entry.websocket_limits = RateLimits::from_route(&limits)
                            .map_err(|e| format!("route {template:?}: {e}"))?;
                    }
                }
                "http" => {
                    for method in methods {
                        let method = method.to_ascii_uppercase();
                        if !entry.http.iter().any(|(m, _)| *m == method) {
                            entry.http.push((method, id));
                        }
                    }
                }
                other => return Err(format!("route {template:?}: unknown kind {other:?}")),
            }
        }
        Ok(Self { table, endpoints })
    }

    pub fn find(&self, path: &str) -> Option<Found<'_>> {
        let matched = self.table.at(path).ok()?;
        Some(Found {
            endpoints: &self.endpoints[*matched.value],
            params: matched
                .params
                .iter()
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect(),
        })
    }
}

impl Endpoints {
    pub fn http_route(&self, method: &str) -> Option<usize> {
        let lookup = if method == "HEAD" { "GET" } else { method };
        self.http
            .iter()
            .find(|(m, _)| m == method || m == lookup)
            .map(|(_, id)| *id)
    }

    pub fn allowed_methods(&self) -> String {
        let methods: Vec<&str> = self.http.iter().map(|(m, _)| m.as_str()).collect();
        methods.join(", ")
    }
}

/// Decode `%XX` escapes; invalid escapes and non-UTF-8 results are kept as they came.
pub fn percent_decode(path: &str) -> Cow<'_, str> {
    if !path.contains('%') {
        return Cow::Borrowed(path);
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(value) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(value);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(decoded) => Cow::Owned(decoded),
        Err(_) => Cow::Borrowed(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(template: &str, kind: &str, methods: Vec<String>, id: usize) -> RouteSpec {
        (template.into(), kind.into(), methods, id, HashMap::new())
    }

    #[test]
    fn a_websocket_route_carries_its_own_limits() {
        let mut limited = spec("/ws", "websocket", vec![], 0);
        limited.4.insert("max_messages_per_second".into(), 5.0);
        let routes = Routes::build(vec![limited.clone()]).unwrap();
        let found = routes.find("/ws").unwrap();
        assert_eq!(
            found.endpoints.websocket_limits.messages_per_second,
            Some(5.0)
        );
        assert_eq!(found.endpoints.websocket_limits.bytes_per_second, None);
        limited.4.insert("max_bytes_per_second".into(), -1.0);
        assert!(Routes::build(vec![limited]).is_err());
    }

    fn routes() -> Routes {
        Routes::build(vec![
            spec("/ws/{client_id}", "websocket", vec![], 0),
            spec("/", "http", vec!["GET".into()], 1),
            spec("/", "websocket", vec![], 2),
            spec("/items", "http", vec!["POST".into()], 3),
        ])
        .unwrap()
    }

    #[test]
    fn path_parameters_are_captured() {
        let routes = routes();
        let found = routes.find("/ws/42").unwrap();
        assert_eq!(found.endpoints.websocket, Some(0));
        assert_eq!(
            found.params,
            vec![("client_id".to_owned(), "42".to_owned())]
        );
    }

    #[test]
    fn one_path_holds_http_and_websocket_routes() {
        let routes = routes();
        let found = routes.find("/").unwrap();
        assert_eq!(found.endpoints.websocket, Some(2));
        assert_eq!(found.endpoints.http_route("GET"), Some(1));
        assert_eq!(found.endpoints.http_route("HEAD"), Some(1));
        assert_eq!(found.endpoints.http_route("POST"), None);
    }

    #[test]
    fn catch_all_parameter_matches_across_slashes() {
        let routes =
            Routes::build(vec![spec("/files/{*file_path}", "websocket", vec![], 0)]).unwrap();
        let found = routes.find("/files/docs/2026/report.txt").unwrap();
        assert_eq!(
            found.params,
            vec![("file_path".to_owned(), "docs/2026/report.txt".to_owned())]
        );
        assert!(routes.find("/files/").is_none());
    }

    #[test]
    fn unknown_paths_do_not_match() {
        assert!(routes().find("/nope").is_none());
        assert!(routes().find("/ws/1/extra").is_none());
    }

    #[test]
    fn percent_escapes_are_decoded() {
        assert_eq!(percent_decode("/ws/a%20b"), "/ws/a b");
        assert_eq!(percent_decode("/ws/%E2%82%AC"), "/ws/€");
        assert_eq!(percent_decode("/ws/%zz"), "/ws/%zz");
        assert_eq!(percent_decode("/ws/%4"), "/ws/%4");
    }
}
