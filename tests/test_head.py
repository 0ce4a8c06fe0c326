import math

import numpy as np
import tensorflow as tf

from fashion_exp.head.fit import view_dataset
from fashion_exp.head.model import build_head
from fashion_exp.hyperparameters import HeadParams


def params(learning_rate, size_inner, droprate):
    return HeadParams(learning_rate, size_inner, droprate, "none")


def test_epoch_e_trains_on_view_e_mod_k():
    k, n, dim, batch = 3, 10, 4, 4
    views = np.stack([np.full((n, dim), v, np.float32) for v in range(k)])
    views += np.arange(n, dtype=np.float32)[None, :, None] / 100  # row identity in the decimals
    labels = np.arange(n)
    data = list(view_dataset(tf.constant(views), tf.constant(labels), batch, 0, 7, seed=1))
    steps = math.ceil(n / batch)
    assert len(data) == 7 * steps
    for epoch in range(7):
        chunk = data[epoch * steps : (epoch + 1) * steps]
        x = np.concatenate([c[0].numpy() for c in chunk])
        y = np.concatenate([c[1].numpy() for c in chunk])
        assert np.all(np.floor(x[:, 0]) == epoch % k)  # the whole epoch is view e mod K
        assert sorted(y) == list(range(n))  # every image exactly once per epoch
        np.testing.assert_allclose(x[:, 0] - epoch % k, y / 100, atol=1e-6)  # features match labels


def test_shuffle_differs_between_epochs():
    views = np.zeros((1, 32, 2), np.float32)
    data = list(view_dataset(tf.constant(views), tf.constant(np.arange(32)), 32, 0, 2, seed=0))
    assert not np.array_equal(data[0][1].numpy(), data[1][1].numpy())


def test_resumed_epochs_start_at_the_right_view():
    views = np.stack([np.full((4, 1), v, np.float32) for v in range(3)])
    data = list(view_dataset(tf.constant(views), tf.constant(np.arange(4)), 4, 4, 6, seed=0))
    assert [int(d[0].numpy()[0, 0]) for d in data] == [1, 2]  # epochs 4 and 5 -> views 1 and 2


def test_head_shapes_with_and_without_inner_layer():
    with_inner = build_head(16, 10, params(0.001, 100, 0.2), seed=0, steps_per_epoch=1)
    without = build_head(16, 10, params(0.001, 0, 0.5), seed=0, steps_per_epoch=1)
    assert with_inner.output_shape == (None, 10) and without.output_shape == (None, 10)
    assert [layer.name for layer in with_inner.layers][1:] == ["inner", "dropout", "logits"]
    assert [layer.name for layer in without.layers][1:] == ["logits"]


def test_fit_runs_every_epoch_on_its_own_batches(recwarn):
    import math

    from fashion_exp.head.model import steps_per_execution

    assert steps_per_execution(96) == 16 and steps_per_execution(3) == 3 and steps_per_execution(7) == 7
    assert steps_per_execution(34) == 2
    n, batch = 24, 8  # 3 steps per epoch, fewer than 16
    views = np.random.default_rng(0).random((2, n, 4)).astype(np.float32)
    steps = math.ceil(n / batch)
    head = build_head(4, 3, params(0.01, 0, 0.0), seed=0, steps_per_epoch=steps)
    history = head.fit(
        view_dataset(tf.constant(views), tf.constant(np.arange(n) % 3), batch, 0, 5, seed=0),
        steps_per_epoch=steps,
        epochs=5,
        shuffle=False,
        verbose=0,
    )
    assert len(history.history["loss"]) == 5
    assert not [w for w in recwarn if "ran out of data" in str(w.message)]


def test_a_shipped_model_splits_where_its_heads_begin():
    """head/parts.py: image -> frozen part -> heads, whether the features are pooled (blocks 0) or a
    cut's activation maps read by a nested trunk (blocks 1), with one head or several."""
    import keras
    import pytest

    from fashion_exp.config import load_config
    from fashion_exp.features.backbone import build_backbone
    from fashion_exp.final.ensemble import probabilities
    from fashion_exp.head.model import HeadInputs, new_head
    from fashion_exp.head.parts import split_at_heads

    model_config = load_config(["model=tiny"]).model
    images = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    for blocks, count in ((0, 1), (0, 2), (1, 2)):
        backbone = build_backbone(model_config, 32, seed=0, blocks=blocks)
        inputs = HeadInputs(backbone.feature_shape, 3, 8, backbone.top)
        chosen = HeadParams(0.01, 4, 0.0, "none", blocks, 0.1) if blocks else params(0.01, 4, 0.0)
        heads = [new_head(inputs, chosen, seed, 10) for seed in range(count)]
        shipped = keras.Model(backbone.model.input, probabilities(heads, backbone.model.output))
        frozen, found = split_at_heads(shipped)
        assert [h.name for h in found] == (["head"] if count == 1 else ["head_0", "head_1"])
        expected = backbone.model.predict(images, verbose=0)
        np.testing.assert_allclose(frozen.predict(images, verbose=0), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no head layer"):
        split_at_heads(backbone.model)


def test_a_model_whose_heads_read_a_layer_called_twice_is_not_split():
    import keras
    import pytest

    from fashion_exp.head.parts import split_at_heads

    image = keras.Input((4,), name="image")
    shared = keras.layers.Dense(4, name="shared")
    features = shared(shared(image))  # the heads read its second call
    head_input = keras.Input((4,))
    head = keras.Model(head_input, keras.layers.Dense(3)(head_input), name="head")
    model = keras.Model(image, keras.layers.Softmax(name="probabilities")(head(features)))
    with pytest.raises(ValueError, match=r"the layer its heads read \(shared\) is called more than once"):
        split_at_heads(model)
