import threading
from dataclasses import replace

import numpy as np
import pytest

from fashion_exp.config import load_config
from fashion_exp.data.augment import IDENTITY, random_transform, view_rng
from fashion_exp.data.images import Decoder
from fashion_exp.features.backbone import build_backbone
from fashion_exp.features.cache import FeatureCache, FeatureKey
from fashion_exp.features.extract import Extractor, jobs_for_policy
from fashion_exp.features.runtime import open_runner
from tests.synthetic import COLORS, data_config, scan, write_image

POLICY = load_config(["augmentation.shear_zoom_flip.views=3"]).augmentation["shear_zoom_flip"]  # shear 10, zoom 0.1
DECODER = Decoder.for_data(data_config(), 32)


@pytest.fixture
def dataset(dataset_root):
    return scan(dataset_root, ["train", "validation"])


@pytest.fixture(scope="module")
def backbone():
    return build_backbone(load_config(["model=tiny", "model.batch_size=8"]).model, 32, seed=1)


def on_tensorflow(backbone, batch_size=8):
    return open_runner(backbone, "tensorflow", batch_size, "unused")


def extractor(backbone, dataset, cache, batch_size=8, seed=0):
    return Extractor(on_tensorflow(backbone, batch_size), dataset, DECODER, cache, batch_size, seed)


def extract(backbone, dataset, cache, jobs, batch_size=8, seed=0):
    return extractor(backbone, dataset, cache, batch_size, seed).run(jobs)


def key_for(backbone, dataset, job, seed=0):
    return extractor(backbone, dataset, None, seed=seed).key(job)


def test_views_are_deterministic_and_differ():
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    a = random_transform(image, POLICY, view_rng(42, POLICY, 0, "x.jpg"))
    b = random_transform(image, POLICY, view_rng(42, POLICY, 0, "x.jpg"))
    c = random_transform(image, POLICY, view_rng(42, POLICY, 1, "x.jpg"))
    assert a.shape == image.shape and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_flip_only_policy_mirrors_or_keeps():
    image = np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    flip = replace(IDENTITY, horizontal_flip=True)
    outs = [random_transform(image, flip, view_rng(0, flip, v, "a")) for v in range(20)]
    assert all(np.array_equal(o, image) or np.array_equal(o, image[:, ::-1]) for o in outs)
    assert any(np.array_equal(o, image[:, ::-1]) for o in outs)


def test_cache_key_changes_with_everything_that_changes_features():
    base = FeatureKey("w1", "150px-nearest", "train", "files1", "identity", 0, 0)
    variants = [
        FeatureKey("w2", "150px-nearest", "train", "files1", "identity", 0, 0),
        FeatureKey("w1", "299px-nearest", "train", "files1", "identity", 0, 0),
        FeatureKey("w1", "150px-bilinear", "train", "files1", "identity", 0, 0),
        FeatureKey("w1", "150px-nearest", "validation", "files1", "identity", 0, 0),
        FeatureKey("w1", "150px-nearest", "train", "files2", "identity", 0, 0),
        FeatureKey("w1", "150px-nearest", "train", "files1", "shear=10", 0, 0),
        FeatureKey("w1", "150px-nearest", "train", "files1", "identity", 7, 0),
        FeatureKey("w1", "150px-nearest", "train", "files1", "identity", 0, 1),
    ]
    digests = {base.digest()} | {v.digest() for v in variants}
    assert len(digests) == len(variants) + 1


def test_extract_then_reuse_the_cache(dataset, backbone, tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path / "cache")
    jobs = jobs_for_policy("train", POLICY) + jobs_for_policy("validation", IDENTITY)
    first = extract(backbone, dataset, cache, jobs, seed=3)
    assert len(first) == 4 and all(
        v.shape == (24 if j.split == "train" else 12, backbone.dim) for j, v in first.items()
    )
    assert not np.allclose(first[jobs[0]], first[jobs[1]])  # different views, different features
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 4

    def fail(*args, **kwargs):
        raise AssertionError("the backbone must not run on a warm cache")

    monkeypatch.setattr(backbone.model, "predict_on_batch", fail)
    second = extract(backbone, dataset, cache, jobs, seed=3)
    for job in jobs:
        np.testing.assert_array_equal(first[job], second[job])


def test_features_do_not_depend_on_batching(dataset, backbone, tmp_path):
    jobs = jobs_for_policy("validation", IDENTITY)
    a = extract(backbone, dataset, FeatureCache(tmp_path / "a"), jobs, batch_size=8)
    b = extract(backbone, dataset, FeatureCache(tmp_path / "b"), jobs, batch_size=5)
    np.testing.assert_allclose(a[jobs[0]], b[jobs[0]], atol=1e-5)


def test_interrupted_write_leaves_no_entry(tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    key = FeatureKey("w", "32px-nearest", "train", "f", "identity", 0, 0)
    with pytest.raises(KeyboardInterrupt), cache.writing(key, (2, 3)) as rows:
        rows[0] = 1.0  # the first row is written, then the extraction is interrupted
        raise KeyboardInterrupt
    assert cache.load(key) is None
    assert list((tmp_path / "cache").iterdir()) == []


def test_corrupt_entry_is_recomputed(tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    key = FeatureKey("w", "32px-nearest", "train", "f", "identity", 0, 0)
    cache.path(key).parent.mkdir(parents=True)
    cache.path(key).write_bytes(b"garbage")
    assert cache.load(key) is None


def test_missing_weights_file_is_a_config_error(tmp_path):
    from fashion_exp.errors import ConfigError

    with pytest.raises(ConfigError, match="model.weights: no weights file"):
        build_backbone(load_config([f"model.weights={tmp_path / 'missing.weights.h5'}"]).model, 75, seed=0)
    bad = tmp_path / "bad.weights.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(ConfigError, match="is not Xception no-top weights"):
        build_backbone(load_config([f"model.weights={bad}"]).model, 75, seed=0)


def test_a_photo_replaced_in_place_gets_new_features(dataset_root, backbone, tmp_path):
    """Same name, same size, same mtime, new photo: the cache must not serve the old photo's features."""
    import os

    cache = FeatureCache(tmp_path / "cache")
    jobs = jobs_for_policy("validation", IDENTITY)
    before = extract(backbone, scan(dataset_root, ["train", "validation"]), cache, jobs)[jobs[0]]
    photo = dataset_root / "validation" / "hat" / "hat_0.jpg"
    old = photo.stat()
    replacement = write_image(tmp_path / "other.jpg", COLORS["shoes"], size=(24, 24), seed=5).read_bytes()
    assert len(replacement) < old.st_size
    photo.write_bytes(replacement.ljust(old.st_size, b"\0"))  # a smaller JPEG padded to the old size
    os.utime(photo, ns=(old.st_atime_ns, old.st_mtime_ns))  # as `cp -p` or `rsync -t` would leave it
    assert photo.stat().st_size == old.st_size and photo.stat().st_mtime_ns == old.st_mtime_ns

    dataset = scan(dataset_root, ["train", "validation"])
    after = extract(backbone, dataset, cache, jobs)[jobs[0]]
    row = [s.path for s in dataset.splits["validation"]].index("validation/hat/hat_0.jpg")
    expected = backbone.model.predict_on_batch(DECODER.load(photo)[None])[0]
    np.testing.assert_allclose(after[row], expected, atol=1e-5)  # the new photo's features
    assert not np.allclose(after[row], before[row], atol=1e-3)
    others = [i for i in range(len(after)) if i != row]
    np.testing.assert_allclose(after[others], before[others], atol=1e-5)


def _hold_claim(cache, key, release: threading.Event, write=None):
    """Another claimant (a second open of the lock file, as another process would have)."""
    held = threading.Event()

    def hold():
        with cache.claim(key, wait=0):
            held.set()
            release.wait(30)
            if write is not None:
                with cache.writing(key, write.shape) as rows:
                    rows[:] = write

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(10)
    return thread


def test_an_entry_claimed_elsewhere_is_waited_for_not_computed_twice(dataset, backbone, tmp_path):
    """Processes sharing a cache split the entries: one claimed by another is loaded, not recomputed."""
    cache = FeatureCache(tmp_path / "cache")
    jobs = jobs_for_policy("train", POLICY)  # three views
    key = key_for(backbone, dataset, jobs[0])
    theirs = np.full((len(dataset.splits["train"]), backbone.dim), 7.0, np.float32)
    release = threading.Event()
    thread = _hold_claim(cache, key, release, write=theirs)
    threading.Timer(1.0, release.set).start()  # the other claimant finishes after a second
    results = extract(backbone, dataset, cache, jobs)
    thread.join()
    assert np.array_equal(results[jobs[0]], theirs)  # loaded what the claimant wrote
    assert not np.array_equal(results[jobs[1]], theirs)  # the others were computed here
    assert all(cache.load(key_for(backbone, dataset, job)) is not None for job in jobs)


def test_an_entry_whose_claimant_died_is_computed(dataset, backbone, tmp_path):
    """A claimant that ends without writing its entry (a killed worker) leaves it claimable."""
    cache = FeatureCache(tmp_path / "cache")
    jobs = jobs_for_policy("validation", IDENTITY)
    key = key_for(backbone, dataset, jobs[0])
    release = threading.Event()
    thread = _hold_claim(cache, key, release)
    threading.Timer(0.5, release.set).start()
    results = extract(backbone, dataset, cache, jobs)
    thread.join()
    fresh = extract(backbone, dataset, FeatureCache(tmp_path / "other"), jobs)
    np.testing.assert_allclose(results[jobs[0]], fresh[jobs[0]], rtol=1e-5, atol=1e-6)


def test_features_extract_a_policys_views_only_when_asked_and_once(dataset, backbone, tmp_path):
    """Features opens without extracting; views(policy) extracts that policy's views once, the
    disk check sees them, and asking again extracts nothing."""
    from fashion_exp.features.features import Features, Scan, jobs_for

    extractor_ = extractor(backbone, dataset, FeatureCache(tmp_path / "cache"))
    ran = []
    run = extractor_.run
    extractor_.run = lambda jobs: ran.append(list(jobs)) or run(jobs)
    features = Features(Scan(dataset, "table"), extractor_)
    policies = {"none": IDENTITY, "szf": POLICY}
    jobs = jobs_for(policies)
    n_train, n_val, photo = len(dataset.splits["train"]), len(dataset.splits["validation"]), 4 * backbone.dim
    assert ran == [] and features.missing_bytes(jobs) == photo * (n_val + n_train * (1 + 3))  # nothing yet
    views = features.views(POLICY)
    assert views.shape == (3, n_train, backbone.dim) and len(ran) == 1 and len(ran[0]) == 3
    assert features.missing_bytes(jobs) == photo * (n_val + n_train)  # validation and the identity left
    assert np.array_equal(features.views(POLICY), views) and len(ran) == 1  # asked again: nothing extracted


def test_a_search_extracts_a_policys_views_when_its_first_trial_starts(overrides, tmp_path):
    """The grid tuner's first point has no augmentation: after it, no augmented view was computed;
    a trial that picks shear_zoom_flip extracts its views."""
    from fashion_exp.search.run import run_search

    common = [*overrides, "tuner=grid", "tuner.epochs=1", "search.augmentation.values=[none,shear_zoom_flip]"]
    common += ["search.learning_rate.values=[0.01]", "search.size_inner.values=[10]", "search.droprate.values=[0.0]"]
    features = tmp_path / "work" / "features"
    run_search(load_config([*common, "tuner.max_trials=1"]))
    assert sorted(p.name.split("-")[0] for p in features.glob("*.npy")) == ["train", "validation"]  # no views yet
    augmented = [*common, "search.augmentation.values=[shear_zoom_flip]", "tuner.max_trials=1"]
    run_search(load_config(augmented))
    assert len(list(features.glob("train-*.npy"))) == 1 + 2  # identity + the policy's 2 views


def test_decoding_runs_ahead_of_the_backbone_by_a_bounded_number_of_batches(tmp_path):
    """Decoded images waiting for a slow backbone stay at most PREFETCH batches (memory does not
    grow with the split), and the order is the split's."""
    import time

    from fashion_exp.data.dataset import Dataset, Sample
    from fashion_exp.features import extract

    decoded = []

    class CountingDecoder:
        def load(self, path):
            decoded.append(path.name)
            return np.full((2, 2, 3), int(path.stem), np.uint8)

    samples = [Sample(f"{i}.jpg", 0) for i in range(100)]
    dataset = Dataset(tmp_path, ["a"], {"train": samples}, {})
    job = jobs_for_policy("train", IDENTITY)[0]
    batches = extract._batches(dataset, job, CountingDecoder(), 4, 0)
    first = next(batches)
    time.sleep(0.3)  # a slow backbone: the decoding threads must stop PREFETCH batches ahead
    assert len(decoded) <= 4 * (extract.PREFETCH + 1)
    rest = list(batches)
    assert [int(v) for b in [first, *rest] for v in b[:, 0, 0, 0]] == list(range(100))
