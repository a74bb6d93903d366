"""Post-export fixes and checks on an exported graph's declared inputs and outputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import onnx

from pipeline.errors import CheckFailed


def tensor_shape(value: onnx.ValueInfoProto) -> list[int | str]:
    """Declared shape with ints for fixed dims and names for symbolic ones."""
    return [d.dim_param if d.dim_param else int(d.dim_value) for d in value.type.tensor_type.shape.dim]


def rename_hw_dims(graph: onnx.GraphProto) -> None:
    """Rename the input's symbolic H/W dims to height/width everywhere in the graph's declared shapes."""
    in_dims = graph.input[0].type.tensor_type.shape.dim
    mapping = {}
    for idx, new in ((2, "height"), (3, "width")):
        if len(in_dims) > idx and in_dims[idx].dim_param and in_dims[idx].dim_param not in mapping:
            mapping[in_dims[idx].dim_param] = new
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for d in value.type.tensor_type.shape.dim:
            if d.dim_param in mapping:
                d.dim_param = mapping[d.dim_param]


def pin_output_dims(
    graph: onnx.GraphProto, eager_shapes: Mapping[str, list[int]], dynamic_axes: Sequence[int]
) -> None:
    """Replace symbolic output dims outside `dynamic_axes` by their eager sizes.

    TorchScript's shape inference loses track through Resize and declares e.g. seg as
    [batch, Resizeseg_dim_1, Resizeseg_dim_2, Resizeseg_dim_3]. Under the output contract
    (docs/architecture.md: [B, C, H, W] at the input resolution) the axes that were not requested dynamic
    (channels, and H/W unless `dynamic_hw`) cannot vary, so the declared shape can say so, as dynamo's
    already does. Nothing downstream re-checks a declared output shape (`onnx.checker` does not, ONNX
    Runtime only warns), so this relies on that contract.
    """
    for value in graph.output:
        eager = eager_shapes[value.name]
        for i, d in enumerate(value.type.tensor_type.shape.dim):
            if d.dim_param and i not in dynamic_axes and i < len(eager):
                d.dim_value = int(eager[i])


def check_graph_io(
    proto: onnx.ModelProto, input_name: str, task_names: Sequence[str], dynamic_hw: bool
) -> None:
    """Check the exported I/O names and that the requested axes stayed symbolic.

    Raises:
        CheckFailed: On a wrong name or a frozen axis.
    """
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    if inputs != [input_name] or outputs != list(task_names):
        raise CheckFailed(
            f"exported graph has inputs {inputs} and outputs {outputs}; expected "
            f"['{input_name}'] and {list(task_names)}"
        )
    shape = tensor_shape(proto.graph.input[0])
    wanted = (0, 2, 3) if dynamic_hw else (0,)
    frozen = [i for i in wanted if not isinstance(shape[i], str)]
    if frozen:
        raise CheckFailed(f"exported input shape {shape} froze axes {frozen} that were requested dynamic")


def default_opset(proto: onnx.ModelProto) -> int:
    """The model's default-domain (ai.onnx) opset version."""
    return next(int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx"))
