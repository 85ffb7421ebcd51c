"""How frames are compressed in both stores: lossless (default) or JPEG at a chosen quality.

Lossless is Blosc zstd: frames are ground truth for training and evaluation. JPEG (libjpeg-turbo
through `imagecodecs`) trades exactness for size where frames dominate a store: one chunk holds
one frame, encoded as a baseline JPEG at `quality`, so any chunk decodes with any JPEG decoder.
benchmarks/bench_long_video.py --frames measures size and PSNR per quality on DAVIS.

Zarr v3 has no JPEG codec in its core specification; this module registers one under the name
"trackprep.jpeg" (zarr's codec registry), which any reader gets by importing trackprep's store
modules (trackprep.open_annotations, trackprep.io.segment_store).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.codecs import BloscCodec
from zarr.core.buffer import Buffer, NDBuffer
from zarr.core.common import JSON, parse_named_configuration
from zarr.registry import register_codec

if TYPE_CHECKING:
    from zarr.core.array_spec import ArraySpec

FRAME_CODECS = ("lossless", "jpeg")
DEFAULT_JPEG_QUALITY = 95
JPEG_CODEC_NAME = "trackprep.jpeg"


class FrameCodecError(ValueError):
    """An unknown frame codec or a JPEG quality outside 1..100."""


@dataclass(frozen=True)
class JpegCodec(ArrayBytesCodec):
    """uint8 chunks [..., H, W, 3] (RGB) or [..., H, W] (grey) as one JPEG image with the
    chunk's frames stacked vertically (one frame for the annotation store, a segment's L frames
    for the segment store; with H a multiple of 16, as 320 is, no JPEG block spans two frames)."""

    is_fixed_size = False
    quality: int

    def __init__(self, *, quality: int = DEFAULT_JPEG_QUALITY) -> None:
        object.__setattr__(self, "quality", check_quality(quality))

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> "JpegCodec":
        _, config = parse_named_configuration(data, JPEG_CODEC_NAME, require_configuration=False)
        return cls(**(config or {}))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, JSON]:
        return {"name": JPEG_CODEC_NAME, "configuration": {"quality": self.quality}}

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        import imagecodecs

        image = imagecodecs.jpeg8_decode(chunk_bytes.to_bytes())
        return chunk_spec.prototype.nd_buffer.from_numpy_array(np.ascontiguousarray(image).reshape(chunk_spec.shape))

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        import imagecodecs

        array = np.asarray(chunk_array.as_numpy_array())
        if array.dtype != np.uint8:
            raise FrameCodecError(f"JPEG frames: expected uint8 chunks, got {array.dtype}")
        image = array.reshape((-1, *array.shape[-2:]) if array.shape[-1] == 3 else (-1, array.shape[-1]))
        return chunk_spec.prototype.buffer.from_bytes(imagecodecs.jpeg8_encode(image, level=self.quality))

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        raise NotImplementedError  # variable size


register_codec(JPEG_CODEC_NAME, JpegCodec)


def check_quality(quality: Any) -> int:
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise FrameCodecError(f"jpeg_quality: expected an integer in 1..100, got {quality!r}")
    return quality


def frame_codecs(codec: str = "lossless", *, quality: int = DEFAULT_JPEG_QUALITY, lossless: Any = None) -> dict[str, Any]:
    """`create_array` keyword arguments that store frames with `codec` ("lossless" or "jpeg");
    `lossless` replaces the default lossless compressor (Blosc zstd 3)."""
    if codec == "lossless":
        return {"compressors": lossless or BloscCodec(cname="zstd", clevel=3, shuffle="noshuffle")}
    if codec == "jpeg":
        return {"serializer": JpegCodec(quality=check_quality(quality)), "compressors": None}
    raise FrameCodecError(f"frames codec: expected one of {', '.join(FRAME_CODECS)}, got {codec!r}")
