//! A Schema Registry stand-in on 127.0.0.1 and a free port: the two reads a consumer makes
//! (`GET /schemas/ids/{id}`, `GET /subjects/{subject}/versions/{version}`) answered as the
//! real registry answers them, 404 bodies and optional Basic auth included. Schemas are
//! registered in process; serving can be stopped and started again on the same port (the
//! registry taken away and brought back), and every request is counted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A schema to register, with the type and references the registry records for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Subject {
    schema: String,
    /// `AVRO`, `PROTOBUF` or `JSON`.
    schema_type: &'static str,
    references: Vec<Reference>,
}

impl Subject {
    pub fn avro(schema: &str) -> Subject {
        Subject { schema: schema.to_owned(), schema_type: "AVRO", references: Vec::new() }
    }

    pub fn protobuf(schema: &str) -> Subject {
        Subject { schema: schema.to_owned(), schema_type: "PROTOBUF", references: Vec::new() }
    }

    pub fn json(schema: &str) -> Subject {
        Subject { schema: schema.to_owned(), schema_type: "JSON", references: Vec::new() }
    }

    /// Refers to a schema registered under another subject.
    pub fn referencing(mut self, reference: Reference) -> Subject {
        self.references.push(reference);
        self
    }

    /// The fields `/schemas/ids/{id}` answers with: `schemaType` absent for Avro, and
    /// `references` only when there are some, as the real registry does.
    fn fields(&self) -> serde_json::Map<String, Value> {
        let mut fields = serde_json::Map::new();
        fields.insert("schema".into(), json!(self.schema));
        if self.schema_type != "AVRO" {
            fields.insert("schemaType".into(), json!(self.schema_type));
        }
        if !self.references.is_empty() {
            let references: Vec<Value> = self
                .references
                .iter()
                .map(|r| json!({ "name": r.name, "subject": r.subject, "version": r.version }))
                .collect();
            fields.insert("references".into(), Value::Array(references));
        }
        fields
    }
}

/// A reference: the name it is known by (the import path, for Protobuf; the type's full
/// name, for Avro), and the subject and version it is registered under.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub name: String,
    pub subject: String,
    pub version: u32,
}

impl Reference {
    pub fn new(name: &str, subject: &str, version: u32) -> Reference {
        Reference { name: name.to_owned(), subject: subject.to_owned(), version }
    }
}

#[derive(Default)]
struct Schemas {
    /// By id, from 1.
    by_id: Vec<Subject>,
    /// Each subject's versions, from 1: their ids.
    subjects: HashMap<String, Vec<u32>>,
}

struct Shared {
    schemas: Mutex<Schemas>,
    requests: AtomicUsize,
    /// The Basic credentials required, if any.
    credentials: Option<String>,
}

/// The stand-in: serving from `start` until dropped, unless stopped.
pub struct SchemaRegistry {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl SchemaRegistry {
    /// A registry that asks for no credentials.
    pub async fn start() -> SchemaRegistry {
        Self::launch(None).await
    }

    /// A registry that answers 401 unless given these Basic credentials.
    pub async fn start_with_auth(user: &str, password: &str) -> SchemaRegistry {
        Self::launch(Some(format!("{user}:{password}"))).await
    }

    async fn launch(credentials: Option<String>) -> SchemaRegistry {
        let shared = Arc::new(Shared { schemas: Mutex::default(), requests: AtomicUsize::new(0), credentials });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port for the schema registry");
        let addr = listener.local_addr().expect("the registry's address");
        let mut registry = SchemaRegistry { shared, addr, server: None };
        registry.serve(listener);
        registry
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Registers `subject`'s next version; its id. The same schema (text, type and
    /// references) gets the same id under any subject, as in the real registry.
    pub fn register(&self, subject: &str, schema: Subject) -> u32 {
        let mut schemas = self.shared.schemas.lock().unwrap();
        let id = match schemas.by_id.iter().position(|s| *s == schema) {
            Some(index) => index as u32 + 1,
            None => {
                schemas.by_id.push(schema);
                schemas.by_id.len() as u32
            }
        };
        schemas.subjects.entry(subject.to_owned()).or_default().push(id);
        id
    }

    /// Requests answered (or refused) since start.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Stops serving: the port refuses connections, and open connections are closed, until
    /// `start_again`. Registered schemas are kept.
    pub async fn stop(&mut self) {
        if let Some((stop, server)) = self.server.take() {
            let _ = stop.send(());
            let _ = server.await;
        }
    }

    /// Serves again on the same port.
    pub async fn start_again(&mut self) {
        if self.server.is_some() {
            return;
        }
        let listener = TcpListener::bind(self.addr).await.expect("the registry's port, again");
        self.serve(listener);
    }

    fn serve(&mut self, listener: TcpListener) {
        let app = Router::new()
            .route("/schemas/ids/{id}", get(by_id))
            .route("/subjects/{subject}/versions/{version}", get(by_version))
            .with_state(self.shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            // Graceful: idle keep-alive connections are closed too, so a stopped registry
            // answers nothing at all.
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        self.server = Some((stop, server));
    }
}

impl Drop for SchemaRegistry {
    fn drop(&mut self) {
        if let Some((_, server)) = self.server.take() {
            server.abort();
        }
    }
}

async fn by_id(State(shared): State<Arc<Shared>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(refused) = refusal(&shared, &headers) {
        return refused;
    }
    let schemas = shared.schemas.lock().unwrap();
    let found = id.parse::<usize>().ok().and_then(|id| id.checked_sub(1)).and_then(|i| schemas.by_id.get(i));
    match found {
        Some(schema) => answer(StatusCode::OK, Value::Object(schema.fields())),
        None => answer(StatusCode::NOT_FOUND, json!({ "error_code": 40403, "message": "Schema not found" })),
    }
}

async fn by_version(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((subject, version)): Path<(String, String)>,
) -> Response {
    if let Some(refused) = refusal(&shared, &headers) {
        return refused;
    }
    let schemas = shared.schemas.lock().unwrap();
    let Some(versions) = schemas.subjects.get(&subject) else {
        let message = format!("Subject '{subject}' not found.");
        return answer(StatusCode::NOT_FOUND, json!({ "error_code": 40401, "message": message }));
    };
    let number = match version.as_str() {
        "latest" | "-1" => Some(versions.len()),
        v => v.parse::<usize>().ok().filter(|n| (1..=versions.len()).contains(n)),
    };
    let Some(number) = number else {
        let message = format!("Version {version} not found.");
        return answer(StatusCode::NOT_FOUND, json!({ "error_code": 40402, "message": message }));
    };
    let id = versions[number - 1];
    let mut fields = schemas.by_id[id as usize - 1].fields();
    fields.insert("subject".into(), json!(subject));
    fields.insert("version".into(), json!(number));
    fields.insert("id".into(), json!(id));
    answer(StatusCode::OK, Value::Object(fields))
}

/// Counts the request; the 401 when it lacks the credentials required, if any.
fn refusal(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let expected = shared.credentials.as_ref()?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
    if given.as_deref() == Some(expected.as_bytes()) {
        return None;
    }
    let mut refused = answer(StatusCode::UNAUTHORIZED, json!({ "error_code": 401, "message": "Unauthorized" }));
    refused
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"SchemaRegistry\""));
    Some(refused)
}

/// A JSON body with the registry's content type.
fn answer(status: StatusCode, body: Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/vnd.schemaregistry.v1+json")], body.to_string()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(url: &str, auth: Option<(&str, &str)>) -> (u16, Value) {
        let mut request = reqwest::Client::new().get(url);
        if let Some((user, password)) = auth {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    #[tokio::test]
    async fn schemas_are_served_by_id_and_by_subject_version_as_the_registry_does() {
        let registry = SchemaRegistry::start().await;
        let common = registry.register("common", Subject::protobuf("syntax = \"proto3\";"));
        let avro = registry.register("t-value", Subject::avro("\"string\""));
        let proto = registry.register(
            "u-value",
            Subject::protobuf("import \"c.proto\";").referencing(Reference::new("c.proto", "common", 1)),
        );
        assert_eq!((common, avro, proto), (1, 2, 3));
        assert_eq!(registry.register("again", Subject::avro("\"string\"")), avro, "same schema, same id");

        let url = registry.url();
        assert_eq!(get(&format!("{url}/schemas/ids/{avro}"), None).await, (200, json!({ "schema": "\"string\"" })));
        let (status, body) = get(&format!("{url}/schemas/ids/{proto}"), None).await;
        assert_eq!(status, 200);
        assert_eq!(body["schemaType"], "PROTOBUF");
        assert_eq!(body["references"], json!([{ "name": "c.proto", "subject": "common", "version": 1 }]));
        let (status, body) = get(&format!("{url}/subjects/common/versions/1"), None).await;
        assert_eq!(
            (status, &body["id"], &body["version"], &body["subject"]),
            (200, &json!(1), &json!(1), &json!("common"))
        );
        assert_eq!(get(&format!("{url}/subjects/t-value/versions/latest"), None).await.1["id"], json!(avro));

        let not_found = json!({ "error_code": 40403, "message": "Schema not found" });
        assert_eq!(get(&format!("{url}/schemas/ids/99"), None).await, (404, not_found));
        assert_eq!(get(&format!("{url}/subjects/nope/versions/1"), None).await.1["error_code"], 40401);
        assert_eq!(get(&format!("{url}/subjects/common/versions/2"), None).await.1["error_code"], 40402);
        assert_eq!(registry.requests(), 7);
    }

    #[tokio::test]
    async fn credentials_are_required_when_set() {
        let registry = SchemaRegistry::start_with_auth("u", "p:w").await;
        let id = registry.register("s", Subject::json("{}"));
        let url = format!("{}/schemas/ids/{id}", registry.url());
        assert_eq!(get(&url, None).await.0, 401);
        assert_eq!(get(&url, Some(("u", "nope"))).await.0, 401);
        assert_eq!(get(&url, Some(("u", "p:w"))).await, (200, json!({ "schema": "{}", "schemaType": "JSON" })));
    }

    #[tokio::test]
    async fn a_stopped_registry_refuses_connections_until_started_again() {
        let mut registry = SchemaRegistry::start().await;
        let id = registry.register("s", Subject::avro("\"int\""));
        let url = format!("{}/schemas/ids/{id}", registry.url());
        let client = reqwest::Client::new();
        assert!(client.get(&url).send().await.unwrap().status().is_success());
        registry.stop().await;
        let error = client.get(&url).send().await.unwrap_err();
        assert!(error.is_connect(), "{error:?}");
        registry.start_again().await;
        assert!(client.get(&url).send().await.unwrap().status().is_success());
    }
}
