"""signlab serve's JSON API through an HTTP client (FastAPI's TestClient): answers, limits and refusals."""

from __future__ import annotations

import io
import struct
import threading
import zlib

import numpy as np
import pytest
from conftest import make_gtsrb_train
from PIL import Image

import signlab
from signlab.api import ClassScore, Prediction
from signlab.classes import GTSRB_CLASS_NAMES

pytest.importorskip("fastapi", reason="signlab serve needs the serve extra: pip install -e '.[dev]'")
from fastapi.testclient import TestClient  # noqa: E402

from signlab.serve.app import create_app  # noqa: E402

TINY = {"model_options": {"widths": [8, 16], "depth": 1}, "batch_size": 8, "epochs": 1, "bf16": "off",
        "val_fraction": 0.25, "progress": False}


def train_tiny(root) -> signlab.Classifier:
    """A model small enough to train in seconds; its answers are poor, which no test here relies on."""
    data = make_gtsrb_train(root / "data", tracks=2, frames=2)
    return signlab.load(signlab.train(data, out=str(root / "run"), log=lambda _: None, **TINY), device="cpu")


def encoded(image: Image.Image | np.ndarray, fmt: str = "PNG", **save) -> bytes:
    image = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, fmt, **save)
    return buf.getvalue()


def rendered_sign(class_id: int = 14, seed: int = 0) -> np.ndarray:
    """A realistic photo of signlab's drawing of the class (no dataset image)."""
    from signlab.synth.pictograms import draw_sign
    from signlab.synth.render import render_variant

    return render_variant(draw_sign(class_id, 128), np.random.default_rng(seed))[0]


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with one tiny compressed row behind it: what a
    decompression bomb looks like before anything is decoded."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


class StubModel:
    """Answers like a Classifier without a network; can hold each call until `release` is set."""

    task = "classify"

    def __init__(self, class_names=GTSRB_CLASS_NAMES, hold: bool = False) -> None:
        self.class_names = list(class_names)
        self.entered, self.release = threading.Event(), threading.Event()
        self.seen: list[np.ndarray] = []
        if not hold:
            self.release.set()

    def predict(self, images, top_k: int = 5) -> list[Prediction]:
        self.seen.extend(images)
        self.entered.set()
        assert self.release.wait(10), "the test never released the held request"
        top = tuple(ClassScore(i, self.class_names[i], 0.5 / (i + 1)) for i in range(top_k))
        return [Prediction(0, self.class_names[0], top[0].probability, top) for _ in images]


def post(client: TestClient, data: bytes, name: str = "photo.png", content_type: str = "image/png"):
    return client.post("/api/classify", files={"file": (name, data, content_type)})


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> signlab.Classifier:
    return train_tiny(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def client(model):
    with TestClient(create_app(model)) as c:
        yield c


def test_classify_gives_the_models_top_five_for_a_rendered_sign(client, model):
    photo = rendered_sign(14)
    r = post(client, encoded(photo))
    assert r.status_code == 200, r.text
    body = r.json()
    top = body["top"]
    assert body["task"] == "classify" and len(top) == 5
    assert [t["name"] for t in top] == [model.class_names[t["class_id"]] for t in top]
    probs = [t["probability"] for t in top]
    assert probs == sorted(probs, reverse=True) and all(p >= 0 for p in probs) and sum(probs) <= 1 + 1e-6
    assert (body["class_id"], body["name"]) == (top[0]["class_id"], top[0]["name"])
    assert top[0]["pictogram"] == f"/api/pictograms/{top[0]['class_id']}.png"
    assert body["image"] == {"width": photo.shape[1], "height": photo.shape[0], "format": "PNG"}
    # The same answer as the library's for the same pixels: the server adds no preprocessing of its own.
    expected = model.predict(photo, top_k=5)[0]
    assert [t["class_id"] for t in top] == [s.class_id for s in expected.top]
    assert probs == pytest.approx([s.probability for s in expected.top], abs=1e-6)


def test_a_jpeg_photo_is_classified_too(client):
    r = post(client, encoded(rendered_sign(1, seed=3), "JPEG", quality=85), "photo.jpg", "image/jpeg")
    assert r.status_code == 200 and r.json()["image"]["format"] == "JPEG"


def test_classes_health_docs_and_page(client, model):
    classes = client.get("/api/classes").json()
    assert [c["name"] for c in classes] == model.class_names and classes[14]["pictogram"] == "/api/pictograms/14.png"
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["task"] == "classify" and health["classes"] == 43
    assert health["max_upload_bytes"] == 10_000_000 and health["busy"] == 0
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/classify", "/api/classes", "/api/health"} <= set(paths)
    page = client.get("/")
    assert page.status_code == 200 and 'capture="environment"' in page.text and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200 and client.get("/static/app.css").status_code == 200


def test_pictograms_are_signlabs_drawings_and_unknown_ids_are_404(client):
    from signlab.synth.pictograms import draw_sign

    r = client.get("/api/pictograms/14.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    served = Image.open(io.BytesIO(r.content))
    assert served.size == (96, 96) and np.array_equal(np.asarray(served), np.asarray(draw_sign(14, 96)))
    for bad in ("43", "-1"):
        r = client.get(f"/api/pictograms/{bad}.png")
        assert r.status_code == 404 and "0..42" in r.json()["detail"]


def test_not_an_image_is_415_whatever_the_content_type_says(client):
    r = post(client, b"just some text, not a photo\n" * 10, "sign.png", "image/png")
    assert r.status_code == 415 and "not an image" in r.json()["detail"]
    r = post(client, b"%!PS-Adobe-3.0 EPSF-3.0\n", "sign.eps", "application/postscript")  # Pillow could open EPS
    assert r.status_code == 415


def test_truncated_and_empty_files_are_400_with_a_message(client):
    whole = encoded(rendered_sign(14))
    r = post(client, whole[: len(whole) // 2])
    assert r.status_code == 400 and "truncated" in r.json()["detail"]
    r = post(client, b"")
    assert r.status_code == 400 and "empty" in r.json()["detail"]


def test_a_decompression_bomb_is_400_before_it_is_decoded(client):
    r = post(client, png_claiming(10_000, 5_000))  # 50 M pixels > the 40 M that training decodes
    assert r.status_code == 400
    assert "10000x5000" in r.json()["detail"] and "decompression bomb" in r.json()["detail"]
    r = post(client, png_claiming(20_000, 20_000))  # so large that Pillow itself refuses to open it
    assert r.status_code == 400 and "decompression bomb" in r.json()["detail"]


def test_the_pixel_limit_is_configurable():
    with TestClient(create_app(StubModel(), max_pixels=50 * 50)) as c:
        assert post(c, encoded(np.zeros((50, 50, 3), np.uint8))).status_code == 200
        assert post(c, encoded(np.zeros((50, 51, 3), np.uint8))).status_code == 400


def test_uploads_over_the_limit_are_413_whether_or_not_they_declare_a_length():
    stub = StubModel()
    limit = 20_000
    with TestClient(create_app(stub, max_upload_bytes=limit)) as c:
        fits = encoded(np.zeros((40, 40, 3), np.uint8))
        fits += b"\0" * (limit - len(fits))  # exactly the limit (Pillow ignores bytes after a PNG's end)
        assert post(c, fits).status_code == 200
        rng = np.random.default_rng(0)  # noise: a PNG of it does not compress below the limit
        big = encoded(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8))
        assert len(big) > 2 * limit
        r = post(c, big)
        assert r.status_code == 413 and "20,000 bytes" in r.json()["detail"]
        form = (b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
                b"Content-Type: image/png\r\n\r\n" + big + b"\r\n--x--\r\n")
        chunks = (form[i:i + 4096] for i in range(0, len(form), 4096))  # no Content-Length: sent chunked
        r = c.post("/api/classify", content=chunks, headers={"content-type": "multipart/form-data; boundary=x"})
        assert r.status_code == 413
    assert len(stub.seen) == 1  # only the upload that fitted reached the model


def test_a_request_over_the_concurrency_limit_is_503_and_the_slot_comes_back():
    stub = StubModel(hold=True)
    with TestClient(create_app(stub, max_concurrent=1)) as c:
        first: dict = {}
        worker = threading.Thread(target=lambda: first.update(r=post(c, encoded(rendered_sign(14)))))
        worker.start()
        try:
            assert stub.entered.wait(10), "the first request never reached the model"
            r = post(c, encoded(rendered_sign(14)))
            assert r.status_code == 503 and r.headers["retry-after"] == "1" and "busy" in r.json()["detail"]
            assert c.get("/api/health").json()["busy"] == 1  # the event loop still answers while one works
        finally:
            stub.release.set()
            worker.join(10)
        assert first["r"].status_code == 200
        assert post(c, b"not an image").status_code == 415  # a refusal frees its slot too
        assert post(c, encoded(rendered_sign(14))).status_code == 200
        assert c.get("/api/health").json()["busy"] == 0


def test_phone_photos_are_turned_upright_by_their_exif_orientation():
    stub = StubModel()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the camera was turned 90 degrees
    with TestClient(create_app(stub)) as c:
        r = post(c, encoded(np.zeros((20, 40, 3), np.uint8), "JPEG", exif=exif), "photo.jpg", "image/jpeg")
    assert r.status_code == 200 and r.json()["image"] == {"width": 20, "height": 40, "format": "JPEG"}
    assert stub.seen[0].shape == (40, 20, 3)


def test_classes_other_than_gtsrbs_get_no_pictogram():
    with TestClient(create_app(StubModel(class_names=[f"kind {i}" for i in range(6)]))) as c:
        assert c.get("/api/classes").json()[0] == {"class_id": 0, "name": "kind 0", "pictogram": None}
        assert all(t["pictogram"] is None for t in post(c, encoded(rendered_sign(14))).json()["top"])


def test_serve_binds_to_loopback_and_passes_the_backend_on(monkeypatch, capsys):
    import uvicorn

    import signlab.serve

    runs, loads = [], []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: runs.append((app, kw)))
    monkeypatch.setattr(signlab, "load", lambda target, **kw: loads.append(kw) or StubModel())
    signlab.serve.serve("runs/x")
    assert runs[0][1]["host"] == "127.0.0.1" and runs[0][1]["port"] == 8000
    assert loads[0] == {"device": "auto", "batch_size": 256, "backend": "torch"}
    assert "http://127.0.0.1:8000/" in capsys.readouterr().out
    signlab.serve.serve("runs/x", host="0.0.0.0", port=9000, backend="onnx")
    assert loads[1]["backend"] == "onnx" and runs[1][1]["host"] == "0.0.0.0"
    assert "other machines can reach it" in capsys.readouterr().out


def test_the_cli_serves_with_its_flags(monkeypatch):
    import signlab.serve
    from signlab.cli import main

    calls = []
    monkeypatch.setattr(signlab.serve, "serve", lambda target, **kw: calls.append((target, kw)))
    assert main(["serve", "runs/x", "--port", "8123", "--max-upload-mb", "1", "--max-concurrent", "2"]) == 0
    target, kw = calls[0]
    assert target == "runs/x" and kw["host"] == "127.0.0.1" and kw["port"] == 8123
    assert kw["max_upload_bytes"] == 1024 * 1024 and kw["max_concurrent"] == 2
