import http.server
import io
import threading
import zipfile
from functools import partial

import pytest

from fashion_exp.data.download import fetch_dataset
from fashion_exp.errors import DataError
from tests.synthetic import data_config, make_dataset

TIMEOUT = data_config().download_timeout_s  # conf/data's


@pytest.fixture
def server(tmp_path):
    """A local HTTP server on 127.0.0.1 serving files from tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def zip_of(folder, prefix="clothing-dataset-small-master"):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for path in folder.rglob("*"):
            if path.is_file():
                zipped.write(path, f"{prefix}/{path.relative_to(folder)}")
    return buffer.getvalue()


def test_fetch_downloads_and_unpacks(server, tmp_path):
    www, url = server
    source = make_dataset(tmp_path / "src", {"train": 2, "validation": 1, "test": 1})
    (www / "data.zip").write_bytes(zip_of(source))
    root = tmp_path / "data" / "clothing"
    assert fetch_dataset(f"{url}/data.zip", root, False, TIMEOUT) is True
    assert sorted(p.name for p in root.iterdir()) == ["test", "train", "validation"]
    assert len(list((root / "train").rglob("*.jpg"))) == 6
    # no temporary files left; the lock file stays (deleting lock files races with waiters)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [".clothing.fetch.lock", "clothing"]


def test_fetch_is_a_no_op_when_data_is_there(tmp_path):
    root = make_dataset(tmp_path / "data", {"train": 1, "validation": 1, "test": 1})
    assert fetch_dataset("http://127.0.0.1:9/never", root, False, TIMEOUT) is False


def test_http_error_is_one_line(server, tmp_path):
    _, url = server
    with pytest.raises(DataError, match="HTTP 404"):
        fetch_dataset(f"{url}/missing.zip", tmp_path / "data", False, TIMEOUT)
    assert not (tmp_path / "data").exists()


def test_not_a_zip(server, tmp_path):
    www, url = server
    (www / "page.zip").write_text("<html>not a zip</html>")
    with pytest.raises(DataError, match="did not return a zip"):
        fetch_dataset(f"{url}/page.zip", tmp_path / "data", False, TIMEOUT)
    assert not (tmp_path / "data").exists()


def test_zip_without_splits(server, tmp_path):
    www, url = server
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("hi")
    (www / "junk.zip").write_bytes(zip_of(tmp_path / "junk"))
    with pytest.raises(DataError, match="no folder with train/"):
        fetch_dataset(f"{url}/junk.zip", tmp_path / "data", False, TIMEOUT)


def test_unreachable_host_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match="set FASHION_DATA"):
        fetch_dataset("http://127.0.0.1:9/data.zip", tmp_path / "data", False, 5)


def test_partial_folder_is_not_overwritten(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.txt").write_text("keep me")
    with pytest.raises(DataError, match="--force"):
        fetch_dataset("http://127.0.0.1:9/data.zip", tmp_path / "data", False, TIMEOUT)
    assert (tmp_path / "data" / "mine.txt").read_text() == "keep me"
