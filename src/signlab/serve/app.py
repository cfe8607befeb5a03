"""The web app: one static page and a JSON API around a loaded model (signlab.load).

Routes are registered by the model's task: a classifier gets POST /api/classify; a detector (task "detect")
will get POST /api/detect beside it, and the page asks /api/health which one to call, so neither the page's
other parts nor the existing API change when it comes.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, HTTPException, UploadFile
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from signlab.classes import GTSRB_CLASS_NAMES
from signlab.data import DEFAULT_MAX_PIXELS
from signlab.serve.upload import BodyLimit, decode_upload

STATIC = Path(__file__).with_name("static")
TOP_K = 5
PICTOGRAM_SIZE = 96
RETRY_AFTER_S = 1


@lru_cache(maxsize=len(GTSRB_CLASS_NAMES))
def pictogram_png(class_id: int) -> bytes:
    """signlab's drawing of a GTSRB class as PNG bytes; drawn once per class (a drawing takes milliseconds)."""
    from signlab.synth.pictograms import draw_sign

    buf = io.BytesIO()
    draw_sign(class_id, PICTOGRAM_SIZE).save(buf, "PNG", optimize=True)
    return buf.getvalue()


class Gate:
    """At most `limit` requests at work at once; one more is turned away (503) instead of queueing, so a
    burst cannot pile up uploads in memory or push every client's latency past its timeout."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        self.busy = 0

    def enter(self) -> None:
        if not self._slots.acquire(blocking=False):
            raise HTTPException(503, f"busy: {self.limit} requests already at work; retry shortly",
                                headers={"Retry-After": str(RETRY_AFTER_S)})
        self.busy += 1

    def leave(self) -> None:
        self.busy -= 1
        self._slots.release()


def create_app(model: Any, max_upload_bytes: int = 10_000_000, max_concurrent: int = 8,
               max_pixels: int | None = None) -> FastAPI:
    """The FastAPI app serving `model` (a signlab.Classifier, or anything with its task, class_names and
    predict). max_pixels: larger images are refused as decompression bombs (default: the model's own
    decoding limit)."""
    if max_upload_bytes < 1 or max_concurrent < 1:
        raise ValueError("max_upload_bytes and max_concurrent must be positive")
    if max_pixels is None:
        max_pixels = getattr(getattr(model, "preprocessing", None), "max_pixels", DEFAULT_MAX_PIXELS)
    gate = Gate(max_concurrent)
    # Decoding and the forward pass block; they run here so the event loop keeps answering other requests
    # (and turning away the ones over the limit) meanwhile. One thread per admitted request.
    pool = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="signlab-serve")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="signlab", summary="Traffic-sign recognition: classify a photo of a sign.",
                  version="1", lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes)
    app.state.model, app.state.gate = model, gate
    gtsrb = list(model.class_names) == list(GTSRB_CLASS_NAMES)

    def scores(top) -> list[dict]:
        return [{"class_id": s.class_id, "name": s.name, "probability": s.probability,
                 "pictogram": f"/api/pictograms/{s.class_id}.png" if gtsrb else None} for s in top]

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/health", summary="Is the model loaded, what it does, and the server's limits")
    def health() -> dict:
        return {"status": "ok", "task": model.task, "classes": len(model.class_names), "busy": gate.busy,
                "max_concurrent": max_concurrent, "max_upload_bytes": max_upload_bytes, "max_pixels": max_pixels}

    @app.get("/api/classes", summary="The model's classes, by class id")
    def classes() -> list[dict]:
        return [{"class_id": i, "name": name, "pictogram": f"/api/pictograms/{i}.png" if gtsrb else None}
                for i, name in enumerate(model.class_names)]

    @app.get("/api/pictograms/{class_id}.png", summary="signlab's drawing of a GTSRB class (PNG)",
             response_class=Response, responses={200: {"content": {"image/png": {}}}})
    def pictogram(class_id: int) -> Response:
        if not 0 <= class_id < len(GTSRB_CLASS_NAMES):
            raise HTTPException(404, f"no pictogram for class {class_id}: GTSRB classes are "
                                     f"0..{len(GTSRB_CLASS_NAMES) - 1}")
        return Response(pictogram_png(class_id), media_type="image/png",
                        headers={"Cache-Control": "public, max-age=86400"})

    if model.task == "classify":
        @app.post("/api/classify", summary="Classify a photo of one sign: the top 5 classes",
                  responses={413: {"description": "upload over the size limit"},
                             415: {"description": "not an image"},
                             400: {"description": "truncated, corrupt, or a decompression bomb"},
                             503: {"description": "too many requests at once; retry after Retry-After s"}})
        async def classify(file: Annotated[UploadFile, File(description="the photo: JPEG, PNG, WebP, ...")]) -> dict:
            # The gate is entered after the upload is in: a slow client then holds no slot while it sends.
            gate.enter()
            try:
                data = await file.read()
                started = time.perf_counter()
                result = await asyncio.get_running_loop().run_in_executor(pool, _classify, model, data, max_pixels)
            finally:
                gate.leave()
            decoded, prediction = result
            return {"task": "classify", "class_id": prediction.class_id, "name": prediction.name,
                    "probability": prediction.probability, "top": scores(prediction.top),
                    "image": {"width": decoded.width, "height": decoded.height, "format": decoded.format},
                    "ms": round(1000 * (time.perf_counter() - started), 2)}

    return app


def _classify(model: Any, data: bytes, max_pixels: int):
    decoded = decode_upload(data, max_pixels)
    return decoded, model.predict([decoded.rgb], top_k=TOP_K)[0]
