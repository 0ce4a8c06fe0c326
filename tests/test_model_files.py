"""A model file runs no code of its own: a SavedModel behind save_exported_model, a .keras file with
Python in it, a model of another kind or an MLmodel that points outside its folder are refused in
one line, before anything of theirs runs (issue 26, item 1)."""

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
import yaml
from PIL import Image

from fashion_exp.cli import main

SIZE = 32


def mlflow_folder(folder: Path, flavor: dict) -> Path:
    folder.mkdir(parents=True)
    mlmodel = {
        "flavors": {"keras": {"keras_version": keras.__version__, **flavor}},
        "metadata": {"class_names": ["a", "b", "c"], "image_size": SIZE, "interpolation": "nearest"},
    }
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    return folder


def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.full((SIZE, SIZE, 3), 128, np.uint8)).save(path)
    return path


def predict(tmp_path: Path, model: Path, capsys) -> str:
    code = main(["predict", "--model", str(model), str(photo(tmp_path)), f"tracking.uri=sqlite:///{tmp_path}/m.db"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_a_savedmodel_is_refused_and_its_graph_never_runs(tmp_path, capsys):
    marker = tmp_path / "the-model-ran-this"

    class Planted(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.uint8)])
        def predict_on_batch(self, images):
            tf.io.write_file(str(marker), "written by a model file")
            return tf.zeros([tf.shape(images)[0], 3])

    folder = mlflow_folder(tmp_path / "model", {"data": "data", "save_exported_model": True})
    tf.saved_model.save(Planted(), str(folder / "data" / "model"))
    err = predict(tmp_path, folder, capsys)
    assert "is a TensorFlow SavedModel (save_exported_model: true)" in err
    assert not marker.exists()


def keras_model(folder: Path, model: keras.Model, data: str = "data") -> Path:
    folder = mlflow_folder(folder, {"data": data, "save_exported_model": False})
    (folder / "data").mkdir()
    model.save(folder / "data" / "model.keras")
    return folder


def classifier(body) -> keras.Model:
    inputs = keras.Input((SIZE, SIZE, 3), dtype="uint8")
    return keras.Model(inputs, body(inputs))


def plain() -> keras.Model:
    """What the project builds, in small: uint8 photos -> class probabilities."""
    scaled = keras.layers.Rescaling(1 / 255)
    return classifier(
        lambda x: keras.layers.Softmax()(keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(scaled(x))))
    )


def test_a_keras_file_with_python_in_it_is_refused(tmp_path, capsys):
    model = classifier(lambda x: keras.layers.Lambda(lambda t: keras.ops.ones((keras.ops.shape(t)[0], 3)))(x))
    err = predict(tmp_path, keras_model(tmp_path / "model", model), capsys)
    assert "safe_mode" in err or "Lambda" in err


def test_a_model_of_another_kind_is_refused(tmp_path, capsys):
    inputs = keras.Input((SIZE, SIZE, 3))  # float32 photos, 5 outputs for 3 classes
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(5)(pooled))
    err = predict(tmp_path, keras_model(tmp_path / "model", model), capsys)
    assert "is not a classifier fashion_exp builds" in err


def test_an_mlmodel_that_points_outside_its_folder_is_refused(tmp_path, capsys):
    pooled = classifier(
        lambda x: keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(x)))
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    pooled.save(elsewhere / "model.keras")
    folder = mlflow_folder(tmp_path / "model", {"data": "../elsewhere/model", "save_exported_model": False})
    err = predict(tmp_path, folder, capsys)
    assert "points outside its folder" in err


def test_a_model_the_project_builds_still_loads(tmp_path, capsys):
    folder = keras_model(tmp_path / "model", plain())
    store = f"tracking.uri=sqlite:///{tmp_path}/m.db"
    assert main(["predict", "--model", str(folder), str(photo(tmp_path)), store]) == 0
    assert "photo.jpg" in capsys.readouterr().out


def test_a_tampered_keras_file_is_one_line(tmp_path, capsys):
    """A .keras file whose config was edited (a layer's units set to null, its layers to a number):
    Keras' deserializer raises TypeError, which is a one-line refusal, not a traceback."""
    import json
    import zipfile

    folder = keras_model(tmp_path / "model", plain())
    path = folder / "data" / "model.keras"
    original = zipfile.ZipFile(path)
    parts = {item.filename: original.read(item.filename) for item in original.infolist()}
    config = json.loads(parts["config.json"])
    next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")["config"]["units"] = None
    with zipfile.ZipFile(path, "w") as tampered:
        for name, data in parts.items():
            tampered.writestr(name, json.dumps(config) if name == "config.json" else data)
    err = predict(tmp_path, folder, capsys)
    assert "cannot load model" in err and "could not be deserialized" in err
