"""Echocardiogram cines from ultrasound DICOMs as EchoPrime expects them (docs/SIGNALS.md, Echo).

One DICOM in, either a ``Cine`` (a masked, square, resized clip of ``frames`` frames taken every
``stride`` frames from frame 0, zero-padded, plus frame 0 at the view classifier's input size) or an
``EchoExclusion`` whose ``reason`` is a key of ``EXCLUSION_REASONS``. ``single_frame`` is a *skip*
(status 'skipped': stills are not cines), every other reason an exclusion.

Checks run in this fixed order in :func:`read_cine` and the first that fails names the reason:

 1. ``missing_file``                 the path is not a file.
 2. ``unreadable``                   pydicom cannot parse the file (not DICOM, corrupt header), or the
                                     image attributes (Rows, Columns, ...) are missing or invalid.
 3. ``not_ultrasound``               neither Modality 'US' nor an ultrasound SOP class, or no
                                     (0x7FE0,0x0010) Pixel Data at all in a complete file (e.g. an SR).
 4. ``unsupported_transfer_syntax``  neither JPEG Baseline nor a syntax pydicom can decode here.
 5. ``single_frame``                 NumberOfFrames <= 1 (skip).
 6. ``truncated``                    the file ends inside the pixel data, the encapsulated data holds
                                     fewer frames than NumberOfFrames, native pixel data is short, or a
                                     needed frame fails to decode.

Only the needed frames are decoded: the clip's frames, plus (only when the file has no usable
SequenceOfUltrasoundRegions) at most ``mask_frames`` evenly spaced frames for the image-based mask.

Colour (checked on pydicom's real ultrasound files in ``tests/test_echo.py``): frames are returned in
RGB, with the YCbCr -> RGB conversion applied exactly once; see :func:`decode_frames`.
"""

from __future__ import annotations

import itertools
import logging
import struct
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, convert_color_space, get_decoder
from pydicom.uid import UID, JPEGBaseline8Bit

from hftri_mimic.common.exclusions import RecordExclusion

VIEWS: tuple[str, ...] = (
    "A2C",
    "A3C",
    "A4C",
    "A5C",
    "Apical_Doppler",
    "Doppler_Parasternal_Long",
    "Doppler_Parasternal_Short",
    "Parasternal_Long",
    "Parasternal_Short",
    "SSN",
    "Subcostal",
)
"""The 11 EchoPrime view classes, in EchoPrime's order."""

EXCLUSION_REASONS: dict[str, str] = {
    "missing_file": "DICOM file not found",
    "unreadable": "file cannot be parsed as a DICOM image",
    "truncated": "pixel data shorter than the header says, or a needed frame does not decode",
    "not_ultrasound": "not an ultrasound image (other modality or no pixel data)",
    "unsupported_transfer_syntax": "transfer syntax that cannot be decoded here",
    "single_frame": "single-frame image (still), not a cine: skipped",
    # not a reader's reason: a DICOM of a real tree's study with an absent file (source.missing_files: exclude)
    "not_downloaded": "a DICOM of the study is not downloaded (source.missing_files: exclude)",
}

SKIP_REASONS: frozenset[str] = frozenset({"single_frame"})
"""Reasons that mean 'skipped' (expected, not a fault) rather than 'excluded'."""

# Ultrasound SOP classes: Image Storage, Multi-frame Image Storage and their retired variants.
_US_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.6.1",
        "1.2.840.10008.5.1.4.1.1.3.1",
        "1.2.840.10008.5.1.4.1.1.6",
        "1.2.840.10008.5.1.4.1.1.3",
    }
)
_REGION_2D = 1  # RegionSpatialFormat 1: tissue / colour-flow 2-D image
# Burned-in text / markers: grey >= _TEXT_MIN_GREY in every frame and temporal std < _STATIC_MAX_STD.
# Overlays encode to identical JPEG blocks frame after frame (std 0; GE's text is grey ~100-135, the
# demo's white), while tissue speckle always moves a little: on pydicom's two real cines no fan pixel
# with grey >= 80 has std < 1.5, and some near the apex have std just under 3 (= mask_min_std).
_TEXT_MIN_GREY = 80
_STATIC_MAX_STD = 1.0
_STATIC_MIN_FRAMES = 3  # fewer frames than this: no static-text test (std of 1-2 frames says nothing)


FRAMINGS = ("echoprime", "sector_box")


@dataclass(frozen=True)
class EchoSettings:
    """Cine preprocessing parameters (config ``echo``).

    size: side of the output clip; frames / stride: frames kept and their spacing from frame 0.
    classify_size: side of the view classifier's input (one frame per cine).
    mask_min_std: image-based mask threshold on the per-pixel temporal std (grey levels).
    mask_frames: at most this many extra, evenly spaced frames decoded for the image-based mask.
    zoom: share of the square's side cut from every edge after the centre crop (EchoPrime: 0.1).
    framing: which square is cropped before ``zoom`` and resizing (``FRAMINGS``): ``echoprime``, the centred square
        of the whole frame, as EchoPrime's own preprocessing framed the clips its weights learned from; or
        ``sector_box``, the centred square of the sector mask's bounding box (fills the clip with the fan).
    """

    size: int = 224
    frames: int = 16
    stride: int = 2
    classify_size: int = 224
    mask_min_std: float = 3.0
    mask_frames: int = 8
    zoom: float = 0.1  # EchoPrime cuts 10% of the square's side from every edge before resizing
    framing: str = "sector_box"

    def __post_init__(self) -> None:
        for name in ("size", "frames", "stride", "classify_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"echo.{name} must be >= 1, got {getattr(self, name)}")
        if self.framing not in FRAMINGS:
            raise ValueError(f"echo.framing must be one of {FRAMINGS}, got {self.framing!r}")
        if self.mask_frames < 0 or self.mask_min_std < 0:
            raise ValueError("echo.mask_frames and echo.mask_min_std must be >= 0")


class EchoExclusion(RecordExclusion):
    """Raised for a DICOM that is excluded (or, for ``single_frame``, skipped), e.g. '12 of 40 frames encoded'."""

    reasons = EXCLUSION_REASONS

    @property
    def status(self) -> str:
        """'skipped' for ``SKIP_REASONS`` (stills), else 'excluded'."""
        return "skipped" if self.reason in SKIP_REASONS else "excluded"

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


@dataclass(frozen=True)
class Cine:
    """A cine that passed every check.

    clip: (frames, size, size, 3) uint8 RGB; masked, square (zero-padded), resized; frames after the
        last real frame (``n_frames_used``) are zero.
    view_frame: (classify_size, classify_size, 3) uint8 RGB: frame 0 processed like the clip.
    n_frames_in: NumberOfFrames of the file; n_frames_used: real frames in ``clip``.
    frame_time_ms: FrameTime (or 1000 / CineRate) when the file gives one.
    mask_source: 'regions' (SequenceOfUltrasoundRegions), 'image' (moving pixels) or 'full' (nothing
        moved: the whole frame is kept).
    """

    clip: np.ndarray
    view_frame: np.ndarray
    n_frames_in: int
    n_frames_used: int
    frame_time_ms: float | None
    mask_source: str


# --------------------------------------------------------------------------- frames


def frame_indices(n_frames: int, settings: EchoSettings) -> list[int]:
    """Frames of the clip: 0, stride, 2 * stride, ... below ``n_frames``, at most ``settings.frames``."""
    return list(range(0, max(n_frames, 0), settings.stride))[: settings.frames]


def _mask_indices(n_frames: int, settings: EchoSettings, taken: Sequence[int]) -> list[int]:
    """At most ``mask_frames`` evenly spaced frames over the whole cine that are not in ``taken``."""
    if settings.mask_frames == 0 or n_frames < 1:
        return []
    spread = np.unique(np.linspace(0, n_frames - 1, settings.mask_frames).round().astype(int))
    return sorted(set(spread.tolist()) - set(taken))


def _n_frames(ds: Dataset) -> int:
    value = ds.get("NumberOfFrames", 1)
    return int(value) if value not in (None, "") else 1


def _encapsulated_frames(data: bytes, n_frames: int) -> list[list[tuple[int, int]]]:
    """Byte spans (start, end) of each frame's fragments in encapsulated JPEG pixel data.

    Items are walked the way pydicom.encaps.parse_basic_offsets / parse_fragments do, but the last
    fragment's length is checked against the data (pydicom keeps a cut fragment). Frames are grouped
    by the Basic Offset Table when it has entries, else one fragment per frame when the counts match,
    else by JPEG start-of-image markers. May return fewer frames than ``n_frames`` (truncated data).
    """
    size = len(data)
    pos, fragments, bot = 0, [], []
    first = True
    while pos + 8 <= size:
        group, elem, length = struct.unpack_from("<HHL", data, pos)
        if (group, elem) == (0xFFFE, 0xE0DD):  # sequence delimiter
            break
        if (group, elem) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
            raise ValueError(f"unexpected item (0x{group:04X},0x{elem:04X}) in encapsulated pixel data")
        if pos + 8 + length > size:  # cut fragment: the file ends inside it
            break
        if first:
            bot = list(struct.unpack_from(f"<{length // 4}L", data, pos + 8))
            first = False
        else:
            fragments.append((pos, pos + 8, pos + 8 + length))  # (item start, payload start, end)
        pos += 8 + length
    if not fragments:
        return []
    if bot:
        base = fragments[0][0]
        starts = {item - base: i for i, (item, _, _) in enumerate(fragments)}
        firsts = [starts[o] for o in bot if o in starts]
    elif len(fragments) == n_frames:
        firsts = list(range(len(fragments)))
    else:
        firsts = [i for i, (_, a, _) in enumerate(fragments) if data[a : a + 2] == b"\xff\xd8"]
    bounds = [*firsts, len(fragments)]
    return [[(a, b) for _, a, b in fragments[i:j]] for i, j in itertools.pairwise(bounds)]


def _jpeg_header(frame: bytes) -> tuple[bool, int | None, tuple[int, ...]]:
    """(JFIF APP0 present, Adobe APP14 transform or None, SOF component ids) of a JPEG stream."""
    jfif, adobe, ids = False, None, ()
    pos = 2 if frame[:2] == b"\xff\xd8" else 0
    while pos + 4 <= len(frame):
        if frame[pos] != 0xFF:
            break
        marker = frame[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            pos += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan / end of image: header done
            break
        (length,) = struct.unpack_from(">H", frame, pos + 2)
        payload = frame[pos + 4 : pos + 2 + length]
        if marker == 0xE0 and payload.startswith(b"JFIF\x00"):
            jfif = True
        elif marker == 0xEE and payload.startswith(b"Adobe") and len(payload) >= 12:
            adobe = payload[11]
        elif marker in (0xC0, 0xC1, 0xC2) and len(payload) >= 6:
            n = payload[5]
            ids = tuple(payload[6 + 3 * i] for i in range(n) if 6 + 3 * i < len(payload))
        pos += 2 + length
    return jfif, adobe, ids


def _fast_jpeg_ok(ds: Dataset, first_frame: bytes) -> bool:
    """Whether libjpeg's own colour handling (cv2/Pillow) gives exactly pydicom's RGB output.

    libjpeg (bundled with cv2 and Pillow) converts a 3-component baseline JPEG from YCbCr to RGB when it
    has a JFIF APP0 marker, an Adobe APP14 marker with transform 1, or neither marker (unless the
    component ids are 'R', 'G', 'B'); ids 'R','G','B' or Adobe transform 0 mean no conversion.
    pydicom decodes the same stream *without* conversion (Pillow plugin: draft('YCbCr') when there is no
    Adobe marker; pylibjpeg: raw), conforms PhotometricInterpretation to the stream (ids 'RGB' -> RGB,
    a JFIF marker -> YBR_FULL_422) and, by default (as_rgb), converts YBR_FULL / YBR_FULL_422 to RGB.
    The two agree when there is no Adobe marker and either libjpeg converts and pydicom sees YBR_FULL*,
    or the ids are RGB (neither converts). Anything else goes through pydicom. Single-component
    MONOCHROME2 streams decode identically (grey replicated to RGB).
    """
    spp = int(ds.get("SamplesPerPixel", 1))
    pi = str(ds.get("PhotometricInterpretation", "")).strip()
    jfif, adobe, ids = _jpeg_header(first_frame)
    if spp == 1:
        return pi == "MONOCHROME2" and len(ids) == 1
    if spp != 3 or adobe is not None or len(ids) != 3:
        return False
    if ids in ((82, 71, 66), (114, 103, 98)):  # 'RGB' / 'rgb': nobody converts
        return True
    pydicom_ybr = pi in ("YBR_FULL", "YBR_FULL_422") or (jfif and "YBR" not in pi)
    return pydicom_ybr


def _decode_jpeg(frame: bytes, rows: int, cols: int, index: int) -> np.ndarray:
    """One JPEG frame -> (rows, cols, 3) uint8 **BGR** via libjpeg-turbo (cv2); libjpeg converts YCbCr."""
    if frame.rstrip(b"\x00")[-2:] != b"\xff\xd9":  # no end-of-image marker: libjpeg would pad with grey
        raise EchoExclusion("truncated", f"frame {index} has no JPEG end-of-image marker")
    bgr = cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None or bgr.shape[:2] != (rows, cols):
        got = "nothing" if bgr is None else f"{bgr.shape[1]}x{bgr.shape[0]}"
        raise EchoExclusion("truncated", f"frame {index} decodes to {got}, expected {cols}x{rows}")
    return bgr


def _to_rgb8(arr: np.ndarray, pi: str, ds: Dataset) -> np.ndarray:
    """One decoded frame in colour space ``pi`` ((rows, cols) or (rows, cols, 3)) -> (rows, cols, 3) uint8."""
    if pi in ("YBR_FULL", "YBR_FULL_422"):
        arr = convert_color_space(arr, pi, "RGB")
    elif pi == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    elif pi not in ("RGB", "MONOCHROME1", "MONOCHROME2"):
        raise EchoExclusion("unreadable", f"PhotometricInterpretation {pi} is not converted to RGB")
    if arr.dtype != np.uint8:
        bits = int(ds.get("BitsStored", 8)) if pi != "PALETTE COLOR" else 16
        arr = np.clip(arr.astype(np.int64) >> max(bits - 8, 0), 0, 255).astype(np.uint8)
    if pi == "MONOCHROME1":
        arr = 255 - arr
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    return arr


def decode_frames(ds: pydicom.Dataset, indices: Sequence[int]) -> np.ndarray:
    """Decode just the frames ``indices`` of ``ds``: (k, rows, cols, 3) uint8 RGB.

    Colour facts (pydicom 3.0, Pillow, opencv; checked on pydicom's examples_ybr_color.dcm and
    pydicom-data's color3d_jpeg_baseline.dcm, JPEG Baseline, PhotometricInterpretation YBR_FULL_422):

    * Pillow (``Image.open(...).convert('RGB')``) and OpenCV (``cv2.imdecode``, BGR order) treat a
      3-component baseline JPEG with a JFIF marker, or with neither JFIF nor Adobe marker (component ids
      1, 2, 3), as YCbCr and return RGB (BGR): the conversion is already done by libjpeg.
    * pydicom decodes the stream raw (still YCbCr: ``as_rgb=False`` gives Y, Cb, Cr with Cb ~ Cr ~ 128
      on grey pixels) and ``ds.pixel_array`` then converts YBR_FULL_422 -> RGB by default (``as_rgb``),
      without changing ``ds.PhotometricInterpretation`` (it still says YBR_FULL_422). The decoder's
      metadata (``Decoder.as_array`` -> meta['photometric_interpretation'] == 'RGB') says what came out.
    * Converting Pillow/OpenCV output once more (YBR -> RGB) gives a strong green cast (G ~ 134, R, B
      ~ 1 on a dark image); this function never does.

    JPEG Baseline (1.2.840.10008.1.2.4.50): each needed frame's bytes are cut from the encapsulated data
    (Basic Offset Table / fragments) and decoded alone with cv2.imdecode (about 10-60x faster than
    ``ds.pixel_array``, which decodes and colour-converts every frame in numpy); used only when libjpeg's
    colour handling provably matches pydicom's (:func:`_fast_jpeg_ok`), else pydicom decodes the frame.
    Other syntaxes pydicom can decode here (native, RLE, JPEG-LS, JPEG 2000, ... with the installed
    plugins): pydicom's per-frame decoder (``Decoder.as_array(ds, index=i)``), then to RGB by its output
    photometric interpretation (YBR_FULL* converted, MONOCHROME replicated, MONOCHROME1 inverted,
    PALETTE COLOR looked up, >8 bits shifted to 8).

    Raises:
        EchoExclusion: 'unsupported_transfer_syntax' (no decoder), 'truncated' (a frame is missing or
            does not decode), 'unreadable' (image attributes missing, colour space not convertible).
    """
    ts = _transfer_syntax(ds)
    rows, cols, n = _image_shape(ds)
    return _decode(ds, list(indices), ts, rows, cols, n, None, bgr=False)


def _transfer_syntax(ds: Dataset) -> UID:
    """The file's transfer syntax, if it is one this module decodes, else EchoExclusion."""
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if not ts:
        raise EchoExclusion("unsupported_transfer_syntax", "no TransferSyntaxUID in the file meta")
    ts = UID(ts)
    if ts == JPEGBaseline8Bit:
        return ts
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise EchoExclusion("unsupported_transfer_syntax", f"{ts} ({ts.name})") from None
    if not decoder.is_available:
        raise EchoExclusion("unsupported_transfer_syntax", f"{ts} ({ts.name}): no decoding plugin installed")
    return ts


def _image_shape(ds: Dataset) -> tuple[int, int, int]:
    """(rows, cols, NumberOfFrames) from the header, or EchoExclusion('unreadable')."""
    try:
        rows, cols, n = int(ds.Rows), int(ds.Columns), _n_frames(ds)
    except (AttributeError, TypeError, ValueError) as err:
        raise EchoExclusion("unreadable", f"image attributes: {type(err).__name__}") from None
    if rows < 1 or cols < 1:
        raise EchoExclusion("unreadable", f"image size {cols}x{rows}")
    return rows, cols, n


def _decode(
    ds: Dataset,
    indices: list[int],
    ts: UID,
    rows: int,
    cols: int,
    n: int,
    spans: list[list[tuple[int, int]]] | None,
    bgr: bool,
) -> np.ndarray:
    """decode_frames with the header already checked; ``spans`` from _encapsulated_frames if known.

    ``bgr``: return the channels in BGR order (what libjpeg gives; read_cine converts to RGB only after
    resizing, which is exact because masking and resizing treat the channels independently)."""
    bad = [i for i in indices if not 0 <= i < n]
    if bad:
        raise IndexError(f"frame indices {bad} outside 0..{n - 1}")
    out = np.empty((len(indices), rows, cols, 3), dtype=np.uint8)
    if not indices:
        return out
    data = ds.get("PixelData")
    if data is None:
        raise EchoExclusion("truncated", "no pixel data")
    if ts == JPEGBaseline8Bit:
        if spans is None:
            try:
                spans = _encapsulated_frames(data, n)
            except ValueError as err:
                raise EchoExclusion("truncated", str(err)) from None
        frames: dict[int, bytes] = {}
        for i in indices:
            if i >= len(spans):
                raise EchoExclusion("truncated", f"frame {i} not encoded ({len(spans)} of {n} frames)")
            parts = spans[i]
            frames[i] = data[parts[0][0] : parts[0][1]] if len(parts) == 1 else b"".join(data[a:b] for a, b in parts)
        if _fast_jpeg_ok(ds, frames[indices[0]]):
            for k, i in enumerate(indices):
                out[k] = _decode_jpeg(frames[i], rows, cols, i)
            return out if bgr else _swap_rb(out)
    decoder = get_decoder(ts)
    for k, i in enumerate(indices):
        try:
            arr, meta = decoder.as_array(ds, index=i)
        except EchoExclusion:
            raise
        except Exception as err:  # any decoder failure on a needed frame
            raise EchoExclusion("truncated", f"frame {i}: {type(err).__name__}") from None
        rgb = _to_rgb8(arr, str(meta.get("photometric_interpretation", "")), ds)
        if rgb.shape != (rows, cols, 3):
            raise EchoExclusion("truncated", f"frame {i} decodes to shape {rgb.shape}")
        out[k] = rgb
    return _swap_rb(out) if bgr else out


def _swap_rb(frames: np.ndarray) -> np.ndarray:
    """(k, H, W, 3) uint8 RGB <-> BGR in place, in one cv2 call over the whole stack."""
    if frames.size:
        flat = frames.reshape(-1, frames.shape[-2], 3)
        cv2.cvtColor(flat, cv2.COLOR_RGB2BGR, dst=flat)
    return frames


# --------------------------------------------------------------------------- mask and geometry


def _region_boxes(ds: Dataset, rows: int, cols: int) -> list[tuple[int, int, int, int]]:
    """Inclusive (x0, y0, x1, y1) boxes of the 2-D (RegionSpatialFormat 1) ultrasound regions."""
    boxes = []
    for item in ds.get("SequenceOfUltrasoundRegions", None) or []:
        try:
            if int(item.get("RegionSpatialFormat", -1)) != _REGION_2D:
                continue
            x0, y0 = int(item.RegionLocationMinX0), int(item.RegionLocationMinY0)
            x1, y1 = int(item.RegionLocationMaxX1), int(item.RegionLocationMaxY1)
        except (AttributeError, TypeError, ValueError):
            continue
        x0, x1 = max(0, min(x0, x1)), min(cols - 1, max(x0, x1))
        y0, y1 = max(0, min(y0, y1)), min(rows - 1, max(y0, y1))
        if x1 >= x0 and y1 >= y0:
            boxes.append((x0, y0, x1, y1))
    return boxes


@dataclass(frozen=True)
class _GreyStats:
    """Per-pixel temporal statistics of the grey level of n frames, kept exact.

    ``n2var`` = n * sum(g^2) - (sum g)^2 = n^2 * variance, an integer held exactly in float64, so that
    ``std < t`` is decided exactly as ``n2var < (n * t)^2``. (Before, the std was computed in float32 by
    numpy; the two agree except where a float32 std rounds across a threshold it exactly equals.)
    """

    n2var: np.ndarray  # (rows, cols) float64 holding integers
    low: np.ndarray  # (rows, cols) uint8: the minimum grey level
    n: int

    def std_below(self, t: float) -> np.ndarray:
        return self.n2var < (self.n * t) ** 2

    def std_above(self, t: float) -> np.ndarray:
        return self.n2var > (self.n * t) ** 2


def _grey_stats(frames: np.ndarray, bgr: bool = False) -> _GreyStats:
    """Temporal statistics of the grey level of (k, rows, cols, 3) uint8 RGB (or ``bgr``) frames."""
    k, rows, cols = frames.shape[:3]
    grey = np.empty((k, rows, cols), dtype=np.uint8)
    for i in range(k):  # frames may be a strided view (a box of larger frames): cv2 reads it in place
        cv2.cvtColor(frames[i], cv2.COLOR_BGR2GRAY if bgr else cv2.COLOR_RGB2GRAY, dst=grey[i])
    # float32 sums of g and g^2 are exact integers while k * 255^2 < 2^24 (k <= 258 frames)
    dtype = np.float32 if k * 255**2 < 2**24 else np.float64
    total, squares = np.zeros((rows, cols), dtype), np.zeros((rows, cols), dtype)
    for g in grey:
        cv2.accumulate(g, total)
        cv2.accumulateSquare(g, squares)
    total, squares = total.astype(np.float64), squares.astype(np.float64)
    return _GreyStats(n2var=k * squares - total * total, low=grey.min(axis=0), n=k)


def _static_text(stats: _GreyStats) -> np.ndarray:
    """(rows, cols) bool: static (std < 1) and bright in every frame (grey >= 80), grown by 1 px.

    Burned-in text, markers and scales are drawn bright and do not change between frames; grown by one
    pixel so their anti-aliased edges go too. No test with fewer than 3 frames.
    """
    if stats.n < _STATIC_MIN_FRAMES:
        return np.zeros(stats.low.shape, dtype=bool)
    text = (stats.std_below(_STATIC_MAX_STD) & (stats.low >= _TEXT_MIN_GREY)).astype(np.uint8)
    return cv2.dilate(text, np.ones((3, 3), np.uint8)) > 0


def sector_mask(
    ds: pydicom.Dataset, frames_rgb: np.ndarray, settings: EchoSettings, bgr: bool = False
) -> tuple[np.ndarray, str]:
    """(rows, cols) bool mask of the ultrasound image area, and its source.

    frames_rgb: (k, rows, cols, 3) uint8 RGB frames of ``ds`` (the more spread over the cine, the
    better the image-based mask); ``bgr``: the frames are in BGR order instead.

    'regions': the union of the boxes of SequenceOfUltrasoundRegions items with RegionSpatialFormat 1
    (2-D), clipped to the image. Inside, pixels that are static (temporal grey std < 1) and bright in
    every frame (grey >= 80), grown by 1 px, are dropped as burned-in text and markers (only with >= 3
    frames).
    'image' (no 2-D region): pixels whose temporal grey std exceeds mask_min_std, opened (removes thin
    moving lines: ECG cursor and sweep, changing digits), closed (fills speckle gaps and dark blood
    pools), the largest connected component, filled as its convex hull (the fan is convex), then the
    same static-bright text removal. Static overlays (text, ECG trace, scales, colour bar) never move,
    so they are outside by construction.
    'full': no 2-D region and no moving pixel (a frozen cine): the whole frame, nothing to go by.
    """
    rows, cols = frames_rgb.shape[1:3]
    boxes = _region_boxes(ds, rows, cols)
    if boxes:
        mask = np.zeros((rows, cols), dtype=bool)
        for x0, y0, x1, y1 in boxes:
            mask[y0 : y1 + 1, x0 : x1 + 1] = True
        # the text test only matters inside the boxes; its 3x3 growth reaches 1 px, so the boxes' union
        # bounding box grown by 1 px gives exactly the full-frame result there
        ya, yb = max(0, min(b[1] for b in boxes) - 1), min(rows, max(b[3] for b in boxes) + 2)
        xa, xb = max(0, min(b[0] for b in boxes) - 1), min(cols, max(b[2] for b in boxes) + 2)
        mask[ya:yb, xa:xb] &= ~_static_text(_grey_stats(frames_rgb[:, ya:yb, xa:xb], bgr))
        return mask, "regions"

    grey = _grey_stats(frames_rgb, bgr)
    moving = grey.std_above(settings.mask_min_std).astype(np.uint8)
    side = max(rows, cols)
    k_open = 3 if side < 400 else 5
    k_close = max(5, (side // 40) | 1)
    moving = cv2.morphologyEx(moving, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k_open,) * 2))
    moving = cv2.morphologyEx(moving, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k_close,) * 2))
    n_labels, labels, stats, _ = cv2.connectedComponentsWithStats(moving, connectivity=8)
    if n_labels < 2:
        return np.ones((rows, cols), dtype=bool), "full"
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    points = cv2.findNonZero((labels == largest).astype(np.uint8))
    hull = np.zeros((rows, cols), dtype=np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(points), 1)
    return (hull > 0) & ~_static_text(grey), "image"


def square_crop_resize(frames: np.ndarray, mask: np.ndarray, size: int, zoom: float = 0.0) -> np.ndarray:
    """Mask, centre-crop to a square, resize: (k, H, W, 3) -> (k, size, size, 3) uint8.

    Pixels outside ``mask`` (H, W) are set to 0. The crop is the centred square of side min(h, w) of the
    mask's bounding box (docs/SIGNALS.md, Echo: centre-crop), then ``zoom`` of its side is cut from every edge, as
    EchoPrime's ``crop_and_scale`` does (zoom=0.1), and it is resized with cv2.INTER_CUBIC like EchoPrime.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[1:3] != mask.shape:
        raise ValueError(f"expected (k, H, W, 3) frames and an (H, W) mask, got {frames.shape} and {mask.shape}")
    if not 0.0 <= zoom < 0.5:
        raise ValueError(f"zoom must be in [0, 0.5), got {zoom}")
    return _crop_resize(frames, _crop_square(mask, zoom), size)


def _crop_square(mask: np.ndarray, zoom: float) -> tuple[int, int, int, int, np.ndarray]:
    """(y0, x0, height, width, keep) of square_crop_resize: the zoomed centred square of the mask's bounding box
    and the (side, side) uint8 mask inside it."""
    mask8 = _mask8(mask)
    x0, y0, w, h = cv2.boundingRect(mask8)  # the box of the nonzero pixels, as np.nonzero's min / max + 1
    if w == 0 or h == 0:
        raise ValueError("empty mask")
    y1, x1 = y0 + h, x0 + w
    side = min(h, w)
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    y0, x0 = cy - side // 2, cx - side // 2
    cut = int(np.rint(side * zoom))
    return _crop_box(mask8, y0 + cut, x0 + cut, side - 2 * cut, side - 2 * cut)


def _frame_square(mask: np.ndarray, zoom: float) -> tuple[int, int, int, int, np.ndarray]:
    """The crop EchoPrime's preprocessing makes (``crop_and_scale`` to a square output), as its code does it: the
    longer side loses ``round((long - short) / 2)`` pixels at each end (Python's round, so an odd difference leaves
    the crop one pixel off square, as EchoPrime's does; a difference of 1 cuts nothing), then ``int(length * zoom)``
    is cut from each end of each side. Same return as _crop_square; ``mask`` still zeroes the overlays."""
    h, w = mask.shape
    y0, x0, height, width = 0, 0, h, w
    pad = round((max(h, w) - min(h, w)) / 2)
    if w > h:
        x0, width = pad, w - 2 * pad
    elif h > w:
        y0, height = pad, h - 2 * pad
    cut_y, cut_x = int(height * zoom), int(width * zoom)
    return _crop_box(_mask8(mask), y0 + cut_y, x0 + cut_x, height - 2 * cut_y, width - 2 * cut_x)


def _mask8(mask: np.ndarray) -> np.ndarray:
    return mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8)


def _crop_box(mask8: np.ndarray, y0: int, x0: int, height: int, width: int) -> tuple[int, int, int, int, np.ndarray]:
    """(y0, x0, height, width, keep): the crop and the uint8 mask inside it, as _crop_resize takes them."""
    return y0, x0, height, width, np.ascontiguousarray(mask8[y0 : y0 + height, x0 : x0 + width])


def _crop_resize(frames: np.ndarray, crop_box: tuple[int, int, int, int, np.ndarray], size: int) -> np.ndarray:
    """Mask, crop to ``crop_box`` (from _crop_square or _frame_square) and resize each of (k, H, W, C) frames."""
    y0, x0, height, width, keep = crop_box
    crop = np.zeros((height, width, 3), dtype=np.uint8)  # pixels outside the mask are never written: stay 0
    out = np.empty((frames.shape[0], size, size, 3), dtype=np.uint8)
    for i in range(frames.shape[0]):
        crop = cv2.copyTo(frames[i, y0 : y0 + height, x0 : x0 + width], keep, crop)
        out[i] = cv2.resize(crop, (size, size), interpolation=cv2.INTER_CUBIC)
    return out


# --------------------------------------------------------------------------- one file


def _frame_time_ms(ds: Dataset) -> float | None:
    for key, to_ms in (("FrameTime", lambda v: v), ("CineRate", lambda v: 1000.0 / v)):
        try:
            value = float(ds.get(key) or 0.0)
        except (TypeError, ValueError):
            continue
        if value > 0:
            return float(to_ms(value))
    return None


def _is_ultrasound(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    classes = {str(ds.get("SOPClassUID", "")), str(meta.get("MediaStorageSOPClassUID", "")) if meta else ""}
    return str(ds.get("Modality", "")).strip().upper() == "US" or bool(classes & _US_SOP_CLASSES)


@contextmanager
def _quiet_pydicom() -> Iterator[list[warnings.WarningMessage]]:
    """Record pydicom's warnings instead of showing them, and keep its logger (which names the file)
    quiet: a cut or odd file becomes an exclusion reason, not a log line with a path."""
    loggers = [logging.getLogger(name) for name in ("pydicom", "openjpeg")]  # openjpeg: an INFO line per tile
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _ends_inside_last_element(ds: Dataset, size: int) -> bool:
    """Whether a file of ``size`` bytes stops short of, or runs past, its last top-level element's end.

    pydicom stops silently when a file is cut inside a defined-length value or an element header.
    The last element is still raw right after dcmread; its value_tell + length must be the file's end.
    Undefined-length or already converted last elements cannot be checked (reported as not cut; a cut
    inside an undefined-length value is caught by pydicom's end-of-file warning instead).
    """
    tags = list(ds.keys())
    if not tags:
        return True  # file meta only: the data set itself is missing
    elem = ds.get_item(max(tags))
    if not isinstance(elem, RawDataElement) or elem.length == 0xFFFFFFFF:
        return False
    return elem.value_tell + elem.length != size


def _read(path: Path) -> tuple[Dataset, bool]:
    """(dataset, cut): cut means the file ends inside an element.

    When the file ends inside an undefined-length element (typically encapsulated pixel data), pydicom
    warns and returns the dataset *without the elements of that level*, so the header is read again,
    stopping before the pixel data. A file without pixel data is checked for a silent cut.
    """
    with _quiet_pydicom() as caught:
        try:
            ds = pydicom.dcmread(path)
            cut = any("End of file reached" in str(w.message) for w in caught)
            if not cut and "PixelData" not in ds:
                cut = _ends_inside_last_element(ds, path.stat().st_size)
        except Exception:  # InvalidDicomError, or anything a corrupt file raises
            ds, cut = None, True
        if ds is not None and not cut:
            return ds, False
        try:  # is the header at least readable?
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as err:
            raise EchoExclusion("unreadable", type(err).__name__) from None
    if not list(ds.keys()):
        raise EchoExclusion("unreadable", "no data set after the file meta (file ends inside the header)")
    return ds, True


def read_cine(path: Path | str, settings: EchoSettings) -> Cine:
    """Read one ultrasound DICOM cine into a :class:`Cine` (checks in the module docstring's order).

    Raises:
        EchoExclusion: with the first failing check's reason (``single_frame``: skipped).
    """
    path = Path(path)
    if not path.is_file():
        raise EchoExclusion("missing_file", "no such file")
    ds, cut = _read(path)
    try:
        is_us = _is_ultrasound(ds)
        has_pixels = "PixelData" in ds
    except Exception as err:  # a raw element that does not convert
        raise EchoExclusion("unreadable", type(err).__name__) from None
    if not is_us:
        raise EchoExclusion("not_ultrasound", f"Modality {str(ds.get('Modality', '')) or 'absent'}")
    if not has_pixels and not cut:
        raise EchoExclusion("not_ultrasound", "no pixel data")
    ts = _transfer_syntax(ds)
    rows, cols, n = _image_shape(ds)
    if n <= 1:
        raise EchoExclusion("single_frame", f"NumberOfFrames={n}")
    if cut or not has_pixels:
        raise EchoExclusion("truncated", "file ends before the end of its pixel data")

    spans = None
    data = ds.PixelData
    if ts == JPEGBaseline8Bit:
        try:
            spans = _encapsulated_frames(data, n)
        except ValueError as err:
            raise EchoExclusion("truncated", str(err)) from None
        if len(spans) < n:
            raise EchoExclusion("truncated", f"{len(spans)} of {n} frames encoded")
    elif not ts.is_encapsulated:
        spp, bits = int(ds.get("SamplesPerPixel", 1)), int(ds.get("BitsAllocated", 8))
        expected = rows * cols * spp * n * bits // 8
        if len(data) < expected:
            raise EchoExclusion("truncated", f"{len(data)} of {expected} pixel bytes")

    clip_idx = frame_indices(n, settings)
    use_regions = bool(_region_boxes(ds, rows, cols))
    extra = [] if use_regions else _mask_indices(n, settings, clip_idx)
    # BGR until after resizing: masking and resizing treat channels alike, so converting the small
    # resized frames gives exactly the RGB result of converting the full-size ones
    frames = _decode(ds, clip_idx + extra, ts, rows, cols, n, spans, bgr=True)
    mask, source = sector_mask(ds, frames, settings, bgr=True)
    if not 0.0 <= settings.zoom < 0.5:
        raise ValueError(f"zoom must be in [0, 0.5), got {settings.zoom}")
    square = (
        _crop_square(mask, settings.zoom) if settings.framing == "sector_box" else _frame_square(mask, settings.zoom)
    )

    used = len(clip_idx)
    clip = np.zeros((settings.frames, settings.size, settings.size, 3), dtype=np.uint8)
    clip[:used] = _swap_rb(_crop_resize(frames[:used], square, settings.size))
    if settings.classify_size == settings.size:
        view_frame = clip[0].copy()
    else:
        view_frame = _swap_rb(_crop_resize(frames[:1], square, settings.classify_size))[0]
    return Cine(
        clip=clip,
        view_frame=view_frame,
        n_frames_in=n,
        n_frames_used=used,
        frame_time_ms=_frame_time_ms(ds),
        mask_source=source,
    )
