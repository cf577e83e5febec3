//! The Open Inference Protocol over gRPC: `inference.GRPCInferenceService` (generated at build
//! time from proto/grpc_predict_v2.proto) beside the standard `grpc.health.v1` service for
//! Kubernetes probes.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tract_onnx::prelude::{DatumType, Tensor, f16, tract_ndarray};

use super::model::InferError;
use super::tensor::{self, BadTensor};
use super::{Server, log};
use crate::run::NamedTensor;

#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("inference");
}

use proto::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use proto::*;

/// The service name health checks report on.
pub const SERVICE_NAME: &str = "inference.GRPCInferenceService";

fn status(e: &InferError) -> Status {
    let message = e.to_string();
    match e {
        InferError::BadRequest(_) => Status::invalid_argument(message),
        InferError::NotFound(_) => Status::not_found(message),
        InferError::Overloaded(_) => Status::resource_exhausted(message),
        InferError::Draining => Status::unavailable(message),
        InferError::Timeout(_) => Status::deadline_exceeded(message),
        InferError::Failed(_) => Status::internal(message),
        InferError::Unauthorized => Status::unauthenticated(message),
    }
}

struct Service {
    server: Arc<Server>,
}

/// Serves gRPC on `listener` until `stop` resolves.
pub async fn run(
    server: Arc<Server>,
    listener: tokio::net::TcpListener,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let limit = server.options.grpc_max_message_bytes;
    let inference = GrpcInferenceServiceServer::new(Service {
        server: server.clone(),
    })
    .max_decoding_message_size(limit)
    .max_encoding_message_size(limit);
    let mut builder = tonic::transport::Server::builder();
    if let Some(pem) = &server.options.tls {
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(&pem.cert, &pem.key))
            .timeout(std::time::Duration::from_secs(10));
        builder = match builder.tls_config(tls) {
            Ok(b) => b,
            Err(e) => {
                log(&format!("gRPC server: TLS: {e}"));
                return;
            }
        };
    }
    let result = builder
        .add_service(health)
        .add_service(inference)
        .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), stop)
        .await;
    if let Err(e) = result {
        log(&format!("gRPC server: {e}"));
    }
}

fn from_contents(
    datatype: &str,
    shape: &[i64],
    c: &InferTensorContents,
) -> Result<Tensor, BadTensor> {
    let dt = tensor::datum_type(datatype)?;
    let n = tensor::element_count(shape)?;
    let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    fn make<T: tract_onnx::prelude::Datum + Copy>(
        dims: &[usize],
        v: Vec<T>,
        n: usize,
        field: &str,
    ) -> Result<Tensor, BadTensor> {
        if v.len() != n {
            return Err(BadTensor(format!(
                "{} values in {field} for shape {dims:?}: {n} expected",
                v.len()
            )));
        }
        Tensor::from_shape(dims, &v).map_err(|e| BadTensor(e.to_string()))
    }
    match dt {
        DatumType::Bool => make(&dims, c.bool_contents.clone(), n, "bool_contents"),
        DatumType::I8 => make::<i8>(
            &dims,
            tensor::narrowed(&c.int_contents, "an INT8")?,
            n,
            "int_contents",
        ),
        DatumType::I16 => make::<i16>(
            &dims,
            tensor::narrowed(&c.int_contents, "an INT16")?,
            n,
            "int_contents",
        ),
        DatumType::I32 => make(&dims, c.int_contents.clone(), n, "int_contents"),
        DatumType::I64 => make(&dims, c.int64_contents.clone(), n, "int64_contents"),
        DatumType::U8 => make::<u8>(
            &dims,
            tensor::narrowed(&c.uint_contents, "a UINT8")?,
            n,
            "uint_contents",
        ),
        DatumType::U16 => make::<u16>(
            &dims,
            tensor::narrowed(&c.uint_contents, "a UINT16")?,
            n,
            "uint_contents",
        ),
        DatumType::U32 => make(&dims, c.uint_contents.clone(), n, "uint_contents"),
        DatumType::U64 => make(&dims, c.uint64_contents.clone(), n, "uint64_contents"),
        DatumType::F16 => {
            // one bulk conversion: per value, the F16C call costs far more than the rounding
            let mut v = vec![f16::ZERO; c.fp32_contents.len()];
            half::slice::HalfFloatSliceExt::convert_from_f32_slice(
                v.as_mut_slice(),
                &c.fp32_contents,
            );
            make(&dims, v, n, "fp32_contents")
        }
        DatumType::F32 => make(&dims, c.fp32_contents.clone(), n, "fp32_contents"),
        DatumType::F64 => make(&dims, c.fp64_contents.clone(), n, "fp64_contents"),
        DatumType::String => {
            if c.bytes_contents.len() != n {
                return Err(BadTensor(format!(
                    "{} values in bytes_contents for shape {dims:?}: {n} expected",
                    c.bytes_contents.len()
                )));
            }
            let v: Vec<String> = c
                .bytes_contents
                .iter()
                .enumerate()
                .map(|(k, b)| {
                    String::from_utf8(b.to_vec()).map_err(|_| {
                        BadTensor(format!(
                            "BYTES element {k} is not UTF-8 text (binary BYTES are not supported)"
                        ))
                    })
                })
                .collect::<Result<_, _>>()?;
            tract_ndarray::ArrayD::from_shape_vec(dims, v)
                .map(Tensor::from)
                .map_err(|e| BadTensor(e.to_string()))
        }
        _ => Err(BadTensor(format!("unsupported datatype '{datatype}'"))),
    }
}

impl Service {
    /// The bearer-token check of every method but liveness and readiness (which stay open, as
    /// the REST health endpoints and grpc.health.v1 do).
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let Some(token) = &self.server.options.auth_token else {
            return Ok(());
        };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given.is_some_and(|g| super::rest::constant_time_eq(g.as_bytes(), token.as_bytes())) {
            Ok(())
        } else {
            self.server.refuse(&InferError::Unauthorized);
            Err(status(&InferError::Unauthorized))
        }
    }

    fn model_for(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Arc<super::model::ServedModel>, Status> {
        self.server
            .model(name, Some(version))
            .map_err(|e| status(&e))
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Service {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: self.server.is_ready(),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        let known = self.server.model(&r.name, Some(&r.version)).is_ok();
        Ok(Response::new(ModelReadyResponse {
            ready: known && self.server.is_ready(),
        }))
    }

    async fn server_metadata(
        &self,
        request: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        self.authorize(&request)?;
        Ok(Response::new(ServerMetadataResponse {
            name: "mdeploy".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: super::rest::EXTENSIONS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        let m = self.model_for(&r.name, &r.version)?;
        let tensors = |list: &[super::model::TensorMeta]| {
            list.iter()
                .map(|t| model_metadata_response::TensorMetadata {
                    name: t.name.clone(),
                    datatype: t.datatype.clone(),
                    shape: t.shape.clone(),
                })
                .collect()
        };
        Ok(Response::new(ModelMetadataResponse {
            name: m.name.clone(),
            versions: self.server.versions(&m.name),
            platform: "onnx".into(),
            inputs: tensors(&m.inputs),
            outputs: tensors(&m.outputs),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        self.authorize(&request)?;
        let refused = |e: InferError| {
            self.server.refuse(&e);
            status(&e)
        };
        let _admission = self.server.admit().map_err(refused)?;
        let r = request.into_inner();
        let model = self
            .server
            .model(&r.model_name, Some(&r.model_version))
            .map_err(refused)?;
        let raw = !r.raw_input_contents.is_empty();
        if raw && r.raw_input_contents.len() != r.inputs.len() {
            let e = InferError::BadRequest(format!(
                "{} raw_input_contents for {} inputs",
                r.raw_input_contents.len(),
                r.inputs.len()
            ));
            self.server.reject(&model, &e);
            return Err(status(&e));
        }
        let mut inputs = Vec::with_capacity(r.inputs.len());
        for (k, i) in r.inputs.iter().enumerate() {
            let t = if raw {
                tensor::from_raw(&i.datatype, &i.shape, &r.raw_input_contents[k])
            } else {
                match &i.contents {
                    Some(c) => from_contents(&i.datatype, &i.shape, c),
                    None => Err(BadTensor("no contents and no raw_input_contents".into())),
                }
            }
            .map_err(|e| {
                let e = InferError::BadRequest(format!("input '{}': {e}", i.name));
                self.server.reject(&model, &e);
                status(&e)
            })?;
            inputs.push(NamedTensor {
                name: i.name.clone(),
                tensor: t,
            });
        }
        let requested: Vec<String> = r.outputs.iter().map(|o| o.name.clone()).collect();
        let outputs = self
            .server
            .infer(&model, inputs, &requested)
            .await
            .map_err(|e| status(&e))?;
        let mut described = Vec::with_capacity(outputs.len());
        let mut raw_out = Vec::with_capacity(outputs.len());
        for o in &outputs {
            let datatype = tensor::datatype_name(o.tensor.datum_type())
                .ok_or_else(|| Status::internal(format!("output '{}' has no datatype", o.name)))?;
            described.push(model_infer_response::InferOutputTensor {
                name: o.name.clone(),
                datatype: datatype.into(),
                shape: o.tensor.shape().iter().map(|&d| d as i64).collect(),
                parameters: Default::default(),
                contents: None,
            });
            raw_out.push(
                tensor::to_raw(&o.tensor)
                    .map_err(|e| Status::internal(e.to_string()))?
                    .into(),
            );
        }
        Ok(Response::new(ModelInferResponse {
            model_name: model.name.clone(),
            model_version: model.version.to_string(),
            id: r.id,
            parameters: Default::default(),
            outputs: described,
            raw_output_contents: raw_out,
        }))
    }
}
