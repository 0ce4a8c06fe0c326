"""mlflow ui, opening experiments on their runs table: MLflow's own server app with one change.

MLflow 3.17's web UI opens an experiment clicked on its home page on the GenAI "Overview" page
unless this browser has once switched the sidebar to "Model training": it reads a browser-wide
choice (localStorage `mlflow.workflowType_v1`, default "genai"), never the experiment's
`mlflow.experimentKind` tag (its WorkflowTypeContext.tsx and useNavigateToExperimentPageTab.tsx;
upstream issue mlflow/mlflow#24498). The page this app serves makes that choice "machine_learning"
in a browser that has not made it; the sidebar switch still changes it. Everything else is
MLflow's FastAPI app. `python -m fashion_exp ui` serves it on the configured store (store_server.py);
`mlflow server --app-name fashion-exp` runs it too (an `mlflow.app` entry point).
"""

from __future__ import annotations

from pathlib import Path

CHOICE = "mlflow.workflowType_v1"  # MLflow's key: useLocalStorage(key "mlflow.workflowType", version 1)
DEFAULT_VIEW = (
    "<script>try{if(localStorage.getItem('KEY')===null)"
    "localStorage.setItem('KEY',JSON.stringify('machine_learning'))}catch(e){}</script>"
).replace("KEY", CHOICE)
PAGES = ("/", "/index.html")


def page() -> bytes:
    """MLflow's index.html with DEFAULT_VIEW first in its head (before the UI's own scripts run)."""
    import mlflow.server

    index = Path(mlflow.server.__file__).parent / "js" / "build" / "index.html"
    html = index.read_text(encoding="utf-8")
    return html.replace("<head>", "<head>" + DEFAULT_VIEW, 1).encode()


def create_app():
    """The ASGI app: GET of the UI's page answered here, every other request by MLflow's app."""
    from mlflow.server.fastapi_app import app as mlflow_app
    from starlette.responses import Response

    body = page()

    async def app(scope, receive, send):
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD") and scope["path"] in PAGES:
            response = Response(body, media_type="text/html", headers={"Cache-Control": "no-cache"})
            await response(scope, receive, send)
            return
        await mlflow_app(scope, receive, send)

    return app
