"""`signlab serve`: a web page and a JSON API that classify photos of signs (FastAPI on uvicorn).

    signlab serve runs/demo            # http://127.0.0.1:8000/ ; API docs at /docs

The app itself is signlab.serve.app.create_app, for tests and for mounting in another ASGI server.
"""

from __future__ import annotations

from pathlib import Path

from signlab.errors import UserError


def serve(target: str | Path, host: str = "127.0.0.1", port: int = 8000, device: str = "auto",
          backend: str = "torch", batch_size: int = 256, max_upload_bytes: int = 10_000_000,
          max_concurrent: int = 8) -> None:
    """Load the model, print where the page is, and serve until Ctrl-C."""
    try:
        import uvicorn

        from signlab.serve.app import create_app
    except ImportError as e:
        raise UserError(f"signlab serve needs the serve extra ({e.name} is missing): "
                        "pip install 'signlab[serve]'") from None
    import signlab

    model = signlab.load(target, device=device, batch_size=batch_size, backend=backend)
    if getattr(getattr(model, "device", None), "type", None) == "cpu":
        import torch

        # Each request is its own forward pass of one small image, in its own thread: concurrent requests
        # are the parallelism. Intra-op threads on top only fight over the cores (about 25 % fewer
        # requests/s in bench/serve_load.py, docs/serve.md).
        torch.set_num_threads(1)
    app = create_app(model, max_upload_bytes=max_upload_bytes, max_concurrent=max_concurrent)
    shown = f"[{host}]" if ":" in host else host
    print(f"signlab serve: {model!r}")
    print(f"signlab serve: page http://{shown}:{port}/  API docs http://{shown}:{port}/docs  (Ctrl-C stops)",
          flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"signlab serve: listening on {host}: other machines can reach it; there is no authentication",
              flush=True)
    uvicorn.run(app, host=host, port=port, log_level="info")
