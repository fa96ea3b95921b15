"""The output projection of an optimum-intel LLM IR, for leaving it uncompressed."""

import nncf
import openvino as ov


def lm_head_node_names(model: ov.Model) -> list[str]:
    """The MatMul producing the `logits` output and, for tied embeddings, the Gather sharing its weight."""
    logits = next((out for out in model.outputs if "logits" in out.get_names()), model.outputs[0])
    node = logits.get_node()
    while node.get_type_name() != "MatMul":
        if node.get_input_size() == 0:
            raise nncf.ValidationError("No MatMul produces the logits: --keep-lm-head-fp16 cannot find the lm_head.")
        node = node.input_value(0).get_node()
    names = [node.get_friendly_name()]
    weight = node.input_value(1).get_node()
    while weight.get_type_name() == "Convert":
        weight = weight.input_value(0).get_node()
    users = [inp.get_node() for inp in weight.output(0).get_target_inputs()]
    while users:
        user = users.pop()
        if user.get_type_name() == "Convert":
            users += [inp.get_node() for inp in user.output(0).get_target_inputs()]
        elif user.get_type_name() == "Gather":
            names.append(user.get_friendly_name())
    return names
