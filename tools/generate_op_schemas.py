#!/usr/bin/env python3
"""Writes src/onnx/op_schemas.json: the operator facts mdeploy needs, taken from the `onnx`
package's own schemas (every domain, every version in history).

One schema a line, sorted by domain, op and since-version, so a regeneration diffs cleanly:

    {"domain": "", "op": "Add", "since": 14, "deprecated": false,
     "inputs": [["A", "s", "T"], ["B", "s", "T"]], "min_inputs": 2, "max_inputs": 2,
     "outputs": [["C", "s", "T"]], "min_outputs": 1, "max_outputs": 1,
     "types": {"T": ["uint8", ..., "float"]},
     "attributes": {"axis": ["int", false]}}

A formal parameter is [name, option, type]: option "s" single, "o" optional, "v" variadic
(homogeneous), "V" variadic (heterogeneous); type is a constraint name or a type string.
Tensor types are written as their element type ("float"), other types as onnx spells them
("seq(tensor(float))").

Run from the repository root with a venv that has `onnx`:
    .venv/bin/python tools/generate_op_schemas.py
"""

import json
import re
import sys
from pathlib import Path

import onnx
import onnx.defs

OPTION = {
    onnx.defs.OpSchema.FormalParameterOption.Single: "s",
    onnx.defs.OpSchema.FormalParameterOption.Optional: "o",
    onnx.defs.OpSchema.FormalParameterOption.Variadic: "v",
}

TENSOR = re.compile(r"^tensor\((\w+)\)$")


def type_name(t: str) -> str:
    m = TENSOR.match(t)
    return m.group(1) if m else t


def formal(p) -> list:
    option = OPTION[p.option]
    if option == "v" and not p.is_homogeneous:
        option = "V"
    return [p.name, option, type_name(p.type_str)]


def attr_type(t) -> str:
    return str(t).rsplit(".", 1)[-1].lower()


def schema(s) -> dict:
    return {
        "domain": s.domain,
        "op": s.name,
        "since": s.since_version,
        "deprecated": bool(s.deprecated),
        "inputs": [formal(p) for p in s.inputs],
        "min_inputs": s.min_input,
        "max_inputs": min(s.max_input, 2**31 - 1),
        "outputs": [formal(p) for p in s.outputs],
        "min_outputs": s.min_output,
        "max_outputs": min(s.max_output, 2**31 - 1),
        "types": {
            c.type_param_str: sorted(type_name(t) for t in c.allowed_type_strs)
            for c in s.type_constraints
        },
        "attributes": {
            name: [attr_type(a.type), bool(a.required)]
            for name, a in sorted(s.attributes.items())
        },
    }


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "src/onnx/op_schemas.json")
    schemas = sorted(
        (schema(s) for s in onnx.defs.get_all_schemas_with_history()),
        key=lambda s: (s["domain"], s["op"], s["since"]),
    )
    lines = [json.dumps(s, separators=(",", ":")) for s in schemas]
    header = {
        "onnx": onnx.__version__,
        "max_opset": onnx.defs.onnx_opset_version(),
        "schemas": len(schemas),
    }
    out.write_text(
        json.dumps(header, separators=(",", ":")) + "\n" + "\n".join(lines) + "\n"
    )
    print(f"wrote {len(schemas)} schemas to {out} (onnx {onnx.__version__})")


if __name__ == "__main__":
    main()
