"""How heads sit inside a shipped model, and how to find them again.

The contract between assembling a model (final/train.py, final/combine.py) and splitting one
(combine): a shipped model is

    uint8 image -> the frozen part (preprocessing, the backbone up to the features) -> head layer(s)
    -> softmax -> (the mean of the softmaxes when there are several heads)

Each head is one layer (a nested keras.Model: its fine-tuned blocks, if any, and its dense part)
named by head_name: `head` alone, `head_<i>` among several, `<prefix>head_<i>` when groups of
heads share one model (combine's `member_<m>_`: find_heads does not take those, as a combined
model's members are weighted by group, not by head). All heads read one tensor: the frozen part's
output. split_at_heads finds that tensor through the model's config (Keras' saved graph names,
for every layer, the layer whose output it reads), not through Keras' private node objects.
"""

from __future__ import annotations

import re

import keras

HEAD = "head"
HEAD_NAME = re.compile(r"^head(_\d+)?$")


def head_name(index: int | None = None, prefix: str = "") -> str:
    """`head` for a lone head (index None), else `<prefix>head_<index>`."""
    return HEAD if index is None else f"{prefix}{HEAD}_{index}"


def name_heads(heads: list[keras.Model], prefix: str = "") -> None:
    """Name heads built alike (each is called `head`) so that they can share one model."""
    if len(heads) == 1 and not prefix:
        return
    for index, head in enumerate(heads):
        head.name = head_name(index, prefix)


def find_heads(model: keras.Model) -> list:
    """The head layers of a model train-final made, in order (empty for any other model)."""
    return [layer for layer in model.layers if HEAD_NAME.match(layer.name)]


def split_at_heads(model: keras.Model) -> tuple[keras.Model, list]:
    """(the frozen part: image -> the features the heads read, the head layers). Raises ValueError
    when the model has no heads, or heads that do not read one common tensor."""
    heads = find_heads(model)
    if not heads:
        raise ValueError("it has no head layer")
    names = {layer["name"]: layer for layer in model.get_config()["layers"]}
    read = {_producer(names[head.name]) for head in heads}
    if len(read) != 1:
        raise ValueError("its heads do not read one common input")
    producer, index = read.pop()
    if index:
        raise ValueError(f"its heads read output {index} of {producer}")
    features = _outer_output(model, names, producer)
    return keras.Model(model.inputs, features, name="frozen"), heads


def _outer_output(model: keras.Model, configs: dict, name: str):
    """The output, in `model`'s graph, of its layer `name` (called once)."""
    if len(configs[name]["inbound_nodes"]) > 1:
        raise ValueError(f"the layer its heads read ({name}) is called more than once")
    layer = model.get_layer(name)
    if not isinstance(layer, keras.Model):
        return layer.output
    source, _ = _producer(configs[name])  # a nested model's own .output belongs to its inner graph:
    return layer(_outer_output(model, configs, source))  # call it again on what it reads here


def _producer(layer_config: dict) -> tuple[str, int]:
    """(layer name, output index) of what a layer called once reads."""
    nodes = layer_config["inbound_nodes"]
    if len(nodes) != 1 or len(nodes[0]["args"]) != 1:
        raise ValueError(f"its layer {layer_config['name']} is called more than once or on several inputs")
    name, _node, index = nodes[0]["args"][0]["config"]["keras_history"]
    return name, index
