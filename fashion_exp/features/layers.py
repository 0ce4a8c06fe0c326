"""Separable convolutions that train fast on a CPU, and back to Keras' own layer for shipping.

A SeparableConv2D is a depthwise convolution followed by a 1x1 ("pointwise") convolution. On
TensorFlow's CPU kernels the pointwise step's gradient (Conv2DBackpropFilter/Input) runs about 2x
slower than the same product written as a matrix multiplication, and it is most of a fine-tuned
block's training time (benchmarks/bench_finetune.py). MatmulSeparableConv2D computes the same
numbers with a matmul; fine-tuning trains it, and `plain_copy` gives the shipped model back Keras'
own SeparableConv2D with the trained weights, so a saved model needs nothing of fashion_exp.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="fashion_exp")
class MatmulSeparableConv2D(keras.layers.SeparableConv2D):
    """keras.layers.SeparableConv2D (same config, weights and outputs) with its pointwise step as a
    matrix multiplication over the channels."""

    def call(self, inputs):
        if self.data_format != "channels_last":
            return super().call(inputs)
        x = ops.depthwise_conv(
            inputs,
            self.depthwise_kernel,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        shape = ops.shape(x)
        kernel = ops.reshape(self.pointwise_kernel, (-1, self.filters))
        outputs = ops.reshape(ops.matmul(ops.reshape(x, (-1, shape[-1])), kernel), (*shape[:-1], self.filters))
        if self.use_bias:
            outputs = ops.add(outputs, self.bias)
        if self.activation is not None:
            return self.activation(outputs)
        return outputs


def _swap(model: keras.Model, to: type, source: type, dtype: str) -> keras.Model:
    """A copy of `model` (nested models included) whose `source` layers are `to` layers with the same
    config, every layer computing under the dtype policy `dtype`; every weight copied (mixed
    policies keep float32 weights)."""

    def clone(layer):
        kind = to if type(layer) is source else type(layer)
        config = layer.get_config()
        if not isinstance(layer, keras.layers.InputLayer):
            config["dtype"] = dtype
        return kind.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    copy.set_weights(model.get_weights())
    return copy


def fast_copy(model: keras.Model, dtype: str = "float32") -> keras.Model:
    """`model` with MatmulSeparableConv2D for every SeparableConv2D, weights copied, computing under
    the dtype policy `dtype` (for training)."""
    return _swap(model, MatmulSeparableConv2D, keras.layers.SeparableConv2D, dtype)


def plain_copy(model: keras.Model) -> keras.Model:
    """`model` with Keras' SeparableConv2D back in place of MatmulSeparableConv2D, uncompiled (for
    shipping: clone_model compiles its copy like the source, and a nested model's optimizer, the
    fine-tuning BlockAdam, would be saved with the shipped model); every layer back in float32, however
    it was trained."""
    copy = _swap(model, keras.layers.SeparableConv2D, MatmulSeparableConv2D, "float32")
    return keras.Model(copy.input, copy.output, name=copy.name)
