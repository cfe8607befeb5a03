"""What an upload must pass before the model sees it: a size limit enforced while the body arrives, and an
image check that trusts the bytes, not the name or the Content-Type a client sent."""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from signlab.data import EXPECTED_FORMATS, to_rgb_array

# Only the formats signlab reads from datasets: Pillow could open more (EPS, for one, runs Ghostscript), and
# none of those is a photo anyone needs classified.
Image.init()  # Pillow registers most plugins on first use only; open(formats=...) needs them now
FORMATS = sorted(f for f in set().union(*EXPECTED_FORMATS.values()) if f in Image.OPEN)
# The multipart envelope (boundary, headers) around the file: an upload of exactly the limit still fits.
ENVELOPE_BYTES = 16 * 1024


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"upload too large: the limit is {limit / 2**20:.3g} MB ({limit:,} bytes)")


class BodyLimit:
    """ASGI middleware: a request whose Content-Length is over the limit is answered 413 before it is read;
    one without a length (chunked), or that lies about it, gets 413 as soon as its bytes pass the limit.
    (FastAPI's own max_body_size answers the first case in plain text; this API answers JSON throughout.)"""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes
        self.limit = max_bytes + ENVELOPE_BYTES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await _send_json(send, 413, str(BodyTooLarge(self.max_bytes).detail))
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                # FastAPI passes an HTTPException raised while it reads a form on as it is: this becomes the
                # 413 answer, not a 400 "error parsing the body".
                raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counted, send)


async def _send_json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})  # the unread body makes the connection unusable
    await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True)
class Decoded:
    rgb: np.ndarray  # (H, W, 3) uint8, upright
    format: str
    width: int
    height: int


def decode_upload(data: bytes, max_pixels: int) -> Decoded:
    """The uploaded bytes as an upright RGB array. 415: not an image in a format signlab reads; 400: an image
    that claims more than max_pixels (a decompression bomb), or whose data is truncated or corrupt."""
    if not data:
        raise HTTPException(400, "empty upload: send an image file")
    with warnings.catch_warnings():
        # Pillow warns from 89 M pixels; our own limit (the one training decodes with) is checked below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data), formats=FORMATS)
        except Image.UnidentifiedImageError:
            raise HTTPException(415, f"not an image signlab reads ({', '.join(FORMATS)})") from None
        except Image.DecompressionBombError as e:
            raise HTTPException(400, f"image too large (decompression bomb): {e}") from None
        except (OSError, ValueError, SyntaxError) as e:
            raise HTTPException(400, f"unreadable image: {e}") from None
        width, height = im.size
        if width * height > max_pixels:
            raise HTTPException(400, f"image too large: {width}x{height} is over {max_pixels:,} pixels "
                                     "(refused as a possible decompression bomb)")
        try:
            im.load()
            # Phone cameras store the photo sideways and say so in EXIF; the model expects it upright.
            rgb = to_rgb_array(ImageOps.exif_transpose(im))
        except Image.DecompressionBombError as e:
            raise HTTPException(400, f"image too large (decompression bomb): {e}") from None
        except (OSError, ValueError, SyntaxError) as e:  # truncated data, a broken chunk, a bad mode
            raise HTTPException(400, f"unreadable image (truncated or corrupt): {e}") from None
    return Decoded(rgb, im.format or "?", rgb.shape[1], rgb.shape[0])  # the size as shown: upright
