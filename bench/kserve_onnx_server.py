"""The Python server a user would otherwise run: KServe's ModelServer (Open Inference Protocol,
REST and gRPC) wrapping an onnxruntime InferenceSession. Used by bench/serve_compare.py.

    python bench/kserve_onnx_server.py NAME MODEL.onnx HTTP_PORT GRPC_PORT
"""

import sys

import kserve
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

DTYPES = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "int32": "INT32",
          "float16": "FP16", "uint8": "UINT8", "int8": "INT8", "bool": "BOOL"}


class OnnxModel(Model):
    def __init__(self, name, path):
        super().__init__(name)
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.ready = True

    def predict(self, payload: InferRequest, headers=None):
        feeds = {i.name: i.as_numpy() for i in payload.inputs}
        results = self.session.run(None, feeds)
        outputs = []
        for name, value in zip(self.outputs, results):
            out = InferOutput(name=name, shape=list(value.shape),
                              datatype=DTYPES[str(value.dtype)])
            out.set_data_from_numpy(value, binary_data=False)
            outputs.append(out)
        return InferResponse(model_name=self.name, infer_outputs=outputs,
                             response_id=payload.id or "")


if __name__ == "__main__":
    name, path, http_port, grpc_port = sys.argv[1:5]
    model = OnnxModel(name, path)
    ModelServer(http_port=int(http_port), grpc_port=int(grpc_port), workers=1,
                enable_docs_url=False).start([model])
