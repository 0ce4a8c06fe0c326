"""No password of a URI reaches what the product records: MLflow params, tags, text and JSON
artifacts, messages. The URIs a command connects with stay as they are."""

import tempfile
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fashion_exp.redact import redact, redact_values, redact_words

SECRET = "s3cret"
SERVER_STORE = f"postgresql://mlflow:{SECRET}@db.example:5432/mlflow"
TEXT_FILES = {".txt", ".yaml", ".json", ".csv"}  # the artifacts a run logs as text


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://user:s3cret@host/db", "postgresql://user:***@host/db"),
        ("http://user:s3cret@host", "http://user:***@host"),
        ("mysql+pymysql://u:s3cret@h:3306/db?charset=utf8", "mysql+pymysql://u:***@h:3306/db?charset=utf8"),
        ("postgresql://u:s3/cr@et@h/db", "postgresql://u:***@h/db"),  # unencoded / and @ in the password
        ("redis://:s3cret@h:6379", "redis://:***@h:6379"),
        (
            "postgresql://h/db?user=u&password=s3cret&sslmode=require",
            "postgresql://h/db?user=u&password=***&sslmode=require",
        ),
        (
            f"tune tracking.uri={SERVER_STORE} data.url=https://a:s3cret@files.example/x.zip seed=7",
            "tune tracking.uri=postgresql://mlflow:***@db.example:5432/mlflow"
            " data.url=https://a:***@files.example/x.zip seed=7",
        ),
        ('{"a":"postgresql://u:s3cret@h/db","b":"x@y"}', '{"a":"postgresql://u:***@h/db","b":"x@y"}'),
        # the forms a second review found visible
        (
            "postgresql://u@h/db?sslmode=verify-full&sslpassword=s3cret",
            "postgresql://u@h/db?sslmode=verify-full&sslpassword=***",
        ),
        ("https://ghp_s3cret@github.example/org/repo.git", "https://***@github.example/org/repo.git"),
        ("postgresql://u:s3 cret@h:5432/db", "postgresql://u:***@h:5432/db"),  # a password with a space: one value
        ("tracking.uri=postgresql://u:s3 cr et@h/db", "tracking.uri=postgresql://u:***@h/db"),
        ("http://h/api?access_token=s3cret&x=1", "http://h/api?access_token=***&x=1"),
    ],
)
def test_the_password_of_a_uri_is_hidden_and_the_rest_kept(text, shown):
    assert redact(text) == shown


@pytest.mark.parametrize(
    "text",
    [
        "sqlite:////tmp/work/mlflow.db",
        "postgresql://user@host/db",
        "http://127.0.0.1:5000/#/experiments/1?workflowType=machine_learning",
        "models:/fashion@champion",
        "https://example.com/people/a@b",
        "http://127.0.0.1:8000 is up; write to ops@example.com",  # (a port, then a sentence)
        "data.root=/data seed=7 tuner.max_trials=2",
        "",
    ],
)
def test_text_without_a_password_is_unchanged(text):
    assert redact(text) == text


def test_a_command_line_and_nested_values_are_redacted_word_by_word():
    assert redact_words(["promote", f"tracking.uri={SERVER_STORE}"]) == [
        "promote",
        "tracking.uri=postgresql://mlflow:***@db.example:5432/mlflow",
    ]
    assert redact_values({"uri": SERVER_STORE, "n": 3, "list": [SERVER_STORE, None]}) == {
        "uri": "postgresql://mlflow:***@db.example:5432/mlflow",
        "n": 3,
        "list": ["postgresql://mlflow:***@db.example:5432/mlflow", None],
    }


def everything_recorded(client: MlflowClient, run_id: str) -> str:
    """A run's params, tags and the text of its text artifacts (every folder), as one string."""
    import mlflow.artifacts

    run = client.get_run(run_id)
    parts = [*run.data.params.items(), *run.data.tags.items()]
    if client.list_artifacts(run_id):
        with tempfile.TemporaryDirectory() as tmp:  # (without a destination MLflow leaves its copy behind)
            folder = Path(
                mlflow.artifacts.download_artifacts(run_id=run_id, tracking_uri=client.tracking_uri, dst_path=tmp)
            )
            parts += [path.read_text() for path in sorted(folder.rglob("*")) if path.suffix in TEXT_FILES]
    return repr(parts)


def test_a_search_records_no_password_of_a_store_or_a_config_value(store_uri):
    """What a search's parent and trial runs record (flatten(config), tags, config.yaml, JSON) passes
    through the tracker, which hides every password in it."""
    from fashion_exp.tracking.search_runs import SearchTracker

    tracker = SearchTracker(store_uri, "test")
    tracker.open_search("abc", resume=False, run_name="search-abc")
    url = f"https://reader:{SECRET}@files.example/clothes.zip"
    tracker.log_setup(
        params={"tracking.uri": SERVER_STORE, "data.url": url, "seed": "7"},
        tags={"command": f"tune tracking.uri={SERVER_STORE}"},
        texts={"config.yaml": f"tracking:\n  uri: {SERVER_STORE}\ndata:\n  url: {url}\n"},
        dicts={"tuner.json": {"uri": SERVER_STORE, "sources": [url]}},
    )
    tracker.start_trial("0", {"learning_rate": 0.01, "source": url}, tags={"store": SERVER_STORE})
    client = MlflowClient(store_uri)
    parent = everything_recorded(client, tracker.parent_id)
    trial = everything_recorded(client, tracker.children["0"])
    assert SECRET not in parent and SECRET not in trial
    assert "uri: postgresql://mlflow:***@db.example:5432/mlflow" in parent  # config.yaml was read
    assert "https://reader:***@files" in trial
    assert client.get_run(tracker.parent_id).data.params["seed"] == "7"  # the rest as it was


def test_a_run_logger_hides_passwords_in_params_and_tags(store_uri):
    from fashion_exp.tracking.run_logger import RunLogger

    run = RunLogger.start(store_uri, "test", "final", tags={"origin": SERVER_STORE})
    run.params({"tracking.uri": SERVER_STORE})
    run.tags({"tracking_uri": SERVER_STORE})
    recorded = everything_recorded(run.client, run.run_id)
    assert SECRET not in recorded and "mlflow:***@db.example" in recorded


def test_an_unusable_store_is_named_without_its_password():
    from fashion_exp.tracking.store import unusable

    message = str(unusable(SERVER_STORE, RuntimeError(f"could not connect to {SERVER_STORE}")))
    assert SECRET not in message and "tracking.uri: cannot use MLflow store postgresql://mlflow:***@" in message


def test_a_real_search_records_no_password_of_a_config_value(overrides):
    """The whole config goes into the parent run (to_yaml: config.yaml; the compared keys as params):
    a data.url with a password in it is recorded as user:***@host."""
    from fashion_exp.config import load_config
    from fashion_exp.search.run import run_search

    url = f"https://reader:{SECRET}@files.example/clothes.zip"
    config = load_config([*overrides, f"data.url={url}", "tuner.max_trials=1", "tuner.epochs=1"])
    result = run_search(config)
    client = MlflowClient(config.tracking.uri)
    recorded = everything_recorded(client, result.parent_run_id)
    assert SECRET not in recorded and "url: https://reader:***@files.example" in recorded  # config.yaml too


def test_the_mlflow_ui_hint_and_store_errors_print_no_password():
    from fashion_exp.config import load_config
    from fashion_exp.errors import UserError
    from fashion_exp.tracking import registry
    from fashion_exp.tracking.experiments import ui_link

    uri = "postgresql://mlflow:s3cret@db.example:5432/mlflow"
    local, server = (load_config([f"tracking.uri={u}"]).tracking for u in (uri, "http://me:s3cret@host:5000"))
    assert "s3cret" not in ui_link(local, "1") and "mlflow:***@db.example" in ui_link(local, "1")
    assert "s3cret" not in ui_link(server, "1")

    class NoVersions:
        def search_model_versions(self, query):
            return []

    with pytest.raises(UserError) as err:
        registry._versions(NoVersions(), uri, "m")
    assert "s3cret" not in str(err.value) and "mlflow:***@db.example" in str(err.value)


def test_show_config_prints_no_password(capsys):
    from fashion_exp.cli import main

    assert main(["show-config", "tracking.uri=postgresql://fx:s3cret@dbhost/mlflow"]) == 0
    out = capsys.readouterr().out
    assert "postgresql://fx:***@dbhost/mlflow" in out and "s3cret" not in out
