//! The Open Inference Protocol over HTTP/REST (JSON), with the binary tensor data extension:
//! health, server and model metadata, readiness, inference, and Prometheus `/metrics`.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::model::{InferError, ServedModel};
use super::tensor;
use super::{Server, log};
use crate::run::NamedTensor;

/// The binary extension's header: the length of the JSON part of a body.
const HEADER_LENGTH: &str = "inference-header-content-length";

/// The extensions the server implements.
pub const EXTENSIONS: [&str; 1] = ["binary_tensor_data"];

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

fn infer_error(e: &InferError) -> Response {
    let status = match e {
        InferError::BadRequest(_) => StatusCode::BAD_REQUEST,
        InferError::NotFound(_) => StatusCode::NOT_FOUND,
        InferError::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
        InferError::Draining => StatusCode::SERVICE_UNAVAILABLE,
        InferError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        InferError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        InferError::Unauthorized => StatusCode::UNAUTHORIZED,
    };
    error(status, e.to_string())
}

/// Serves REST on `listener` until `stop` resolves.
pub async fn run(
    server: Arc<Server>,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2", get(server_metadata))
        .route("/v2/models/{name}", get(model_metadata))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(model_version_metadata),
        )
        .route("/v2/models/{name}/ready", get(model_ready))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(model_version_ready),
        )
        .route("/v2/models/{name}/infer", post(infer))
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(infer_version),
        )
        .route("/metrics", get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(server.clone(), auth))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(server.clone());
    let header_timeout = server.options.request_timeout;
    match &server.options.tls {
        Some(pem) => match super::tls::rest_config(pem) {
            Ok(config) => {
                let listener =
                    super::tls::TlsListener::new(listener, tokio_rustls::TlsAcceptor::from(config));
                serve_connections(listener, app, header_timeout, stop).await
            }
            Err(e) => log(&format!("REST server: {e}")),
        },
        None => serve_connections(listener, app, header_timeout, stop).await,
    }
}

/// Accepts connections and serves HTTP/1.1 on each until `stop` resolves, then lets those open
/// finish their requests. A connection must send a request's headers within `header_timeout`
/// (an idle kept-alive one too), so clients that connect and trickle or send nothing cannot
/// hold sockets and tasks for ever; the body is bounded by the request timeout in the handler.
async fn serve_connections<L>(
    mut listener: L,
    app: Router,
    header_timeout: std::time::Duration,
    stop: impl std::future::Future<Output = ()>,
) where
    L: axum::serve::Listener,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let (io, _) = tokio::select! {
            connection = listener.accept() => connection,
            _ = &mut stop => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(hyper_util::rt::TokioIo::new(io), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The paths open without a token: the health endpoints (probes carry none).
const OPEN_PATHS: [&str; 2] = ["/v2/health/live", "/v2/health/ready"];

/// Bearer-token check for everything but the health endpoints.
async fn auth(State(server): State<Arc<Server>>, request: Request, next: Next) -> Response {
    if let Some(token) = &server.options.auth_token
        && !OPEN_PATHS.contains(&request.uri().path())
    {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            server.refuse(&InferError::Unauthorized);
            return infer_error(&InferError::Unauthorized);
        }
    }
    next.run(request).await
}

/// Compares without an early exit, so the time taken says nothing about the token.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn live() -> Response {
    axum::Json(json!({"live": true})).into_response()
}

async fn ready(State(server): State<Arc<Server>>) -> Response {
    if server.is_ready() {
        axum::Json(json!({"ready": true})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"ready": false})),
        )
            .into_response()
    }
}

async fn server_metadata() -> Response {
    axum::Json(json!({
        "name": "mdeploy",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": EXTENSIONS,
    }))
    .into_response()
}

fn metadata_of(server: &Server, model: &ServedModel) -> Value {
    json!({
        "name": model.name,
        "versions": server.versions(&model.name),
        "platform": "onnx",
        "inputs": model.inputs,
        "outputs": model.outputs,
    })
}

async fn model_metadata(State(server): State<Arc<Server>>, Path(name): Path<String>) -> Response {
    match server.model(&name, None) {
        Ok(m) => axum::Json(metadata_of(&server, &m)).into_response(),
        Err(e) => infer_error(&e),
    }
}

async fn model_version_metadata(
    State(server): State<Arc<Server>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    match server.model(&name, Some(&version)) {
        Ok(m) => axum::Json(metadata_of(&server, &m)).into_response(),
        Err(e) => infer_error(&e),
    }
}

fn readiness(server: &Server, name: &str, version: Option<&str>) -> Response {
    match server.model(name, version) {
        Ok(_) if server.is_ready() => {
            axum::Json(json!({"name": name, "ready": true})).into_response()
        }
        Ok(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"name": name, "ready": false})),
        )
            .into_response(),
        Err(e) => infer_error(&e),
    }
}

async fn model_ready(State(server): State<Arc<Server>>, Path(name): Path<String>) -> Response {
    readiness(&server, &name, None)
}

async fn model_version_ready(
    State(server): State<Arc<Server>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    readiness(&server, &name, Some(&version))
}

async fn metrics(State(server): State<Arc<Server>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        server.metrics.render(),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct InferRequest {
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<InputTensor>,
    #[serde(default)]
    outputs: Vec<RequestedOutput>,
}

#[derive(Debug, Deserialize)]
struct InputTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    data: Option<tensor::JsonData>,
}

/// An inference response, serialized straight from the output tensors.
#[derive(Serialize)]
struct InferResponse<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<OutputTensor<'a>>,
}

#[derive(Serialize)]
struct OutputTensor<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinaryParameters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<tensor::JsonValues<'a>>,
}

#[derive(Serialize)]
struct BinaryParameters {
    binary_data_size: usize,
}

#[derive(Debug, Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

async fn infer(
    State(server): State<Arc<Server>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    infer_any(server, name, None, headers, body).await
}

async fn infer_version(
    State(server): State<Arc<Server>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    infer_any(server, name, Some(version), headers, body).await
}

async fn infer_any(
    server: Arc<Server>,
    name: String,
    version: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let _admission = match server.admit() {
        Ok(a) => a,
        Err(e) => {
            server.refuse(&e);
            return infer_error(&e);
        }
    };
    let limit = server.options.max_request_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        server.metrics.refuse("too_large");
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {limit} bytes"),
        );
    }
    // a body that trickles in is bounded by the request timeout too
    let timeout = server.options.request_timeout;
    let bytes = match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) if e.to_string().contains("length limit") => {
            server.metrics.refuse("too_large");
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {limit} bytes"),
            );
        }
        Ok(Err(e)) => {
            server.metrics.refuse("bad_request");
            return error(
                StatusCode::BAD_REQUEST,
                format!("the request body could not be read: {e}"),
            );
        }
        Err(_) => {
            server.metrics.refuse("body_timeout");
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {timeout:?}"),
            );
        }
    };
    let model = match server.model(&name, version.as_deref()) {
        Ok(m) => m,
        Err(e) => {
            server.refuse(&e);
            return infer_error(&e);
        }
    };
    let decoded = parse(&headers, &bytes)
        .and_then(|(request, binary)| Ok((decode_inputs(&request, &binary)?, request)));
    let (inputs, request) = match decoded {
        Ok(d) => d,
        Err(e) => {
            let e = InferError::BadRequest(e);
            server.reject(&model, &e);
            return infer_error(&e);
        }
    };
    let requested: Vec<String> = request.outputs.iter().map(|o| o.name.clone()).collect();
    let outputs = match server.infer(&model, inputs, &requested).await {
        Ok(o) => o,
        Err(e) => return infer_error(&e),
    };
    match encode_outputs(&model, &request, outputs) {
        Ok(r) => r,
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// The JSON part of a body, and its binary part (the binary extension).
fn parse(headers: &HeaderMap, bytes: &Bytes) -> Result<(InferRequest, Bytes), String> {
    let json_len = match headers.get(HEADER_LENGTH) {
        Some(v) => {
            let n: usize = v
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or("Inference-Header-Content-Length is not a number")?;
            if n > bytes.len() {
                return Err(format!(
                    "Inference-Header-Content-Length {n} is past the body's {} bytes",
                    bytes.len()
                ));
            }
            n
        }
        None => bytes.len(),
    };
    let request: InferRequest = serde_json::from_slice(&bytes[..json_len])
        .map_err(|e| format!("malformed inference request: {e}"))?;
    Ok((request, bytes.slice(json_len..)))
}

fn decode_inputs(request: &InferRequest, binary: &Bytes) -> Result<Vec<NamedTensor>, String> {
    let mut offset = 0usize;
    let mut out = Vec::with_capacity(request.inputs.len());
    for input in &request.inputs {
        let size = input
            .parameters
            .get("binary_data_size")
            .map(|v| {
                v.as_u64().map(|v| v as usize).ok_or(format!(
                    "input '{}': binary_data_size is not a count",
                    input.name
                ))
            })
            .transpose()?;
        let t = match (size, &input.data) {
            (Some(n), _) => {
                let end = offset
                    .checked_add(n)
                    .filter(|&e| e <= binary.len())
                    .ok_or(format!(
                        "input '{}': binary_data_size {n} is past the binary data",
                        input.name
                    ))?;
                let t = tensor::from_raw(&input.datatype, &input.shape, &binary[offset..end]);
                offset = end;
                t
            }
            (None, Some(data)) => tensor::from_json(&input.datatype, &input.shape, data),
            (None, None) => {
                return Err(format!("input '{}' has no data", input.name));
            }
        }
        .map_err(|e| format!("input '{}': {e}", input.name))?;
        out.push(NamedTensor {
            name: input.name.clone(),
            tensor: t,
        });
    }
    if offset != binary.len() {
        return Err(format!(
            "{} bytes of binary data are not claimed by any input",
            binary.len() - offset
        ));
    }
    Ok(out)
}

fn wants_binary(request: &InferRequest, output: &str) -> bool {
    let all = request
        .parameters
        .get("binary_data_output")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    match request.outputs.iter().find(|o| o.name == output) {
        Some(o) => o
            .parameters
            .get("binary_data")
            .and_then(Value::as_bool)
            .unwrap_or(all),
        None => all,
    }
}

fn encode_outputs(
    model: &ServedModel,
    request: &InferRequest,
    outputs: Vec<NamedTensor>,
) -> Result<Response, String> {
    let mut binary: Vec<u8> = Vec::new();
    let mut described = Vec::with_capacity(outputs.len());
    for o in &outputs {
        let datatype = tensor::datatype_name(o.tensor.datum_type())
            .ok_or(format!("output '{}' has no protocol datatype", o.name))?;
        let mut out = OutputTensor {
            name: &o.name,
            datatype,
            shape: o.tensor.shape(),
            parameters: None,
            data: None,
        };
        if wants_binary(request, &o.name) {
            let raw = tensor::to_raw(&o.tensor).map_err(|e| e.to_string())?;
            out.parameters = Some(BinaryParameters {
                binary_data_size: raw.len(),
            });
            binary.extend_from_slice(&raw);
        } else {
            out.data = Some(tensor::JsonValues(&o.tensor));
        }
        described.push(out);
    }
    let version = model.version.to_string();
    let document = InferResponse {
        model_name: &model.name,
        model_version: &version,
        id: request.id.as_deref(),
        outputs: described,
    };
    let header_bytes = serde_json::to_vec(&document).map_err(|e| e.to_string())?;
    if binary.is_empty() {
        return Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            header_bytes,
        )
            .into_response());
    }
    let json_len = header_bytes.len();
    let mut body = header_bytes;
    body.extend_from_slice(&binary);
    let mut response = Response::new(Body::from(body));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(HEADER_LENGTH, HeaderValue::from(json_len));
    Ok(response)
}
