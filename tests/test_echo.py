"""Tests for the echo stage's DICOM reading (hftri_mimic.echo.dicom): colour, masks, clip geometry, faults.

Colour is checked against pydicom's own decode of real ultrasound files written by someone else
(pydicom's examples_ybr_color.dcm and pydicom-data's color3d_jpeg_baseline.dcm); masks and faults on
demo DICOMs whose overlay and sector positions are known.
"""

from __future__ import annotations

import copy
import time
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import convert_color_space, get_decoder
from pydicom.uid import (
    MPEG2MPML,
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

from hftri_mimic.demo.echo import sector_region, synth_cine, synth_doppler_still, write_us_multiframe, write_us_still
from hftri_mimic.echo.dicom import (
    EXCLUSION_REASONS,
    VIEWS,
    Cine,
    EchoExclusion,
    EchoSettings,
    decode_frames,
    frame_indices,
    read_cine,
    sector_mask,
    square_crop_resize,
)

H, W = 192, 256
ACQ = datetime(2180, 7, 14, 10, 31, 7)
CINE_KW = {"lv_scale": 1.0, "wall_motion": 0.25, "hr_bpm": 72.0, "frame_time_ms": 33.3}
SETTINGS = EchoSettings()
REAL_FILES = ["examples_ybr_color.dcm", "color3d_jpeg_baseline.dcm"]


def _cine(view: str = "A4C", n_frames: int = 40, h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    return synth_cine(np.random.default_rng(seed), view=view, n_frames=n_frames, height=h, width=w, **CINE_KW)


def _write(path: Path, frames: np.ndarray, *, with_regions: bool = True) -> Path:
    write_us_multiframe(
        path,
        frames,
        subject_id=10000032,
        study_id=90000001,
        acquisition_datetime=ACQ,
        frame_time_ms=CINE_KW["frame_time_ms"],
        instance_number=1,
        with_regions=with_regions,
    )
    return path


def _real(name: str) -> pydicom.Dataset:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} not installed (pydicom / pydicom-data)")
    return pydicom.dcmread(path)


def _pydicom_rgb(ds: pydicom.Dataset) -> np.ndarray:
    """pydicom's own decode of every frame, in RGB.

    ``ds.pixel_array`` converts YBR_FULL(_422) to RGB by default (as_rgb=True) but leaves
    ds.PhotometricInterpretation at 'YBR_FULL_422', so that attribute must not be used to decide on a
    second conversion: the decoder's metadata says which colour space actually came out.
    """
    arr = ds.pixel_array
    _, meta = get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, index=0)
    pi = meta["photometric_interpretation"]
    if pi in ("YBR_FULL", "YBR_FULL_422"):
        arr = convert_color_space(arr, pi, "RGB")
    assert pi in ("RGB", "YBR_FULL", "YBR_FULL_422"), pi
    return arr


# --------------------------------------------------------------------------- colour on real files


@pytest.mark.parametrize("name", REAL_FILES)
def test_decode_matches_pydicom_rgb_on_real_ultrasound(name: str) -> None:
    ds = _real(name)
    n = int(ds.NumberOfFrames)
    assert ds.PhotometricInterpretation == "YBR_FULL_422" and ds.file_meta.TransferSyntaxUID.name.startswith("JPEG")
    ref = _pydicom_rgb(ds)
    ours = decode_frames(ds, range(n))

    assert ours.shape == (n, ds.Rows, ds.Columns, 3) and ours.dtype == np.uint8
    diff = np.abs(ours.astype(np.int16) - ref).mean()
    assert diff <= 2.0, f"mean abs diff {diff:.2f} grey levels from pydicom's RGB decode"
    ours_mean, ref_mean = ours.mean(axis=(0, 1, 2)), ref.mean(axis=(0, 1, 2))
    assert np.all(np.abs(ours_mean - ref_mean) < 2.0), f"channel means {ours_mean} vs pydicom {ref_mean}: tint"
    r, g, b = ours_mean
    ref_green_cast = ref_mean[1] > max(ref_mean[0], ref_mean[2]) + 10
    assert ref_green_cast or g <= max(r, b) + 10, f"green cast: RGB means {ours_mean}"

    # the checks above would catch a second YBR->RGB conversion (that is what a green cast looks like)
    twice = convert_color_space(ours[:4], "YBR_FULL", "RGB")
    assert np.abs(twice.astype(np.int16) - ref[:4]).mean() > 20
    assert twice[..., 1].mean() > twice[..., 0].mean() + 50

    subset = [n - 1, 0, n // 2, 3]
    np.testing.assert_array_equal(decode_frames(ds, subset), ours[subset])


@pytest.mark.parametrize("name", REAL_FILES)
def test_read_cine_on_real_ultrasound(name: str) -> None:
    ds = _real(name)
    cine = read_cine(get_testdata_file(name), SETTINGS)
    n = int(ds.NumberOfFrames)
    assert cine.mask_source == "regions" and cine.n_frames_in == n
    assert cine.n_frames_used == min(16, (n + 1) // 2)
    assert cine.clip.shape == (16, 224, 224, 3) and cine.clip[: cine.n_frames_used].max() > 100


def test_pydicom_raw_decode_is_ycbcr_and_libjpeg_gives_rgb() -> None:
    """The colour facts decode_frames relies on (see its docstring)."""
    ds = _real("examples_ybr_color.dcm")
    frame0 = next(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    raw, meta = get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, index=0, as_rgb=False)
    assert meta["photometric_interpretation"] == "YBR_FULL_422"
    assert abs(raw[..., 1].mean() - 128) < 5 and abs(raw[..., 2].mean() - 128) < 5  # Cb, Cr around 128
    rgb, meta = get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, index=0)
    assert meta["photometric_interpretation"] == "RGB"
    libjpeg = cv2.imdecode(np.frombuffer(frame0, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]  # BGR -> RGB
    assert np.abs(libjpeg.astype(np.int16) - rgb).mean() < 0.5  # libjpeg already converted YCbCr -> RGB


def test_demo_cine_decodes_to_the_frames_written(tmp_path: Path) -> None:
    frames = _cine("Apical_Doppler", n_frames=6)  # colour flow (red/blue) and a green ECG
    ds = pydicom.dcmread(_write(tmp_path / "c.dcm", frames))
    ours = decode_frames(ds, range(6))
    assert np.abs(ours.astype(np.int16) - frames).mean() < 2.0
    assert np.all(np.abs(ours.mean(axis=(0, 1, 2)) - frames.mean(axis=(0, 1, 2))) < 1.0)
    assert np.abs(ours.astype(np.int16) - _pydicom_rgb(ds)).mean() < 0.5


def _native_copy(ds: pydicom.Dataset, frames: np.ndarray, pi: str) -> pydicom.Dataset:
    """The same cine stored uncompressed (Explicit VR Little Endian) as ``pi``."""
    out = copy.deepcopy(ds)
    out.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if pi == "MONOCHROME2":
        data = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])
        out.SamplesPerPixel = 1
        del out.PlanarConfiguration
    else:
        data = convert_color_space(frames, "RGB", "YBR_FULL") if pi == "YBR_FULL" else frames
    out.PhotometricInterpretation = pi
    out.PixelData = np.ascontiguousarray(data).tobytes()
    out["PixelData"].VR = "OB"
    out["PixelData"].is_undefined_length = False
    for key in ("LossyImageCompression", "LossyImageCompressionMethod"):
        out.pop(key, None)
    return out


@pytest.mark.parametrize("pi", ["RGB", "YBR_FULL", "MONOCHROME2", "RLE"])
def test_other_transfer_syntaxes_decode_through_pydicom(tmp_path: Path, pi: str) -> None:
    frames = _cine("Doppler_Parasternal_Short", n_frames=5, h=64, w=80)
    ds = pydicom.dcmread(_write(tmp_path / "c.dcm", frames))
    expected = decode_frames(ds, range(5))  # what the JPEG holds
    native = _native_copy(ds, expected, "RGB" if pi == "RLE" else pi)
    if pi == "RLE":
        native.compress(RLELossless)
    if pi == "MONOCHROME2":
        grey = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in expected])
        expected = np.repeat(grey[..., None], 3, axis=-1)
    path = tmp_path / f"{pi}.dcm"
    native.save_as(path, enforce_file_format=True)
    ds2 = pydicom.dcmread(path)
    got = decode_frames(ds2, [4, 1])
    max_err = 3 if pi == "YBR_FULL" else 0  # the RGB -> YBR -> RGB round trip rounds twice
    err = np.abs(got.astype(np.int16) - expected[[4, 1]]).max()
    assert err <= max_err, f"{pi}: max abs error {err} (colour converted twice or not at all?)"
    cine = read_cine(path, SETTINGS)
    assert cine.n_frames_used == 3 and cine.mask_source == "regions"


# Real ultrasound files of the other kinds MIMIC-IV-ECHO may hold (pydicom's and pydicom-data's test files).
REAL_KINDS = {
    "US1_UNCR.dcm": ("Explicit VR Little Endian", "RGB"),
    "US1_J2KR.dcm": ("JPEG 2000 Image Compression (Lossless Only)", "YBR_RCT"),
    "US1_J2KI.dcm": ("JPEG 2000 Image Compression", "YBR_ICT"),
    "examples_palette.dcm": ("Explicit VR Little Endian", "PALETTE COLOR"),
    "OBXXXX1A_rle.dcm": ("RLE Lossless", "PALETTE COLOR"),
}


@pytest.mark.parametrize("name", sorted(REAL_KINDS))
def test_real_ultrasound_of_every_kind_decodes_as_pydicom_does(name: str) -> None:
    """JPEG 2000 (pylibjpeg-openjpeg), RLE, uncompressed and PALETTE COLOR files decode to the RGB pydicom gives
    (its own decode, colour conversion and palette lookup), and a single frame is skipped by name."""
    from pydicom.pixels import apply_color_lut

    ds = _real(name)
    assert (ds.file_meta.TransferSyntaxUID.name, ds.PhotometricInterpretation) == REAL_KINDS[name]
    ours = decode_frames(ds, [0])[0]
    ref = ds.pixel_array
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        ref = (apply_color_lut(ref, ds) >> 8).astype(np.uint8)  # 16-bit lookup tables
    assert ours.shape == ref.shape and ours.dtype == np.uint8
    assert np.abs(ours.astype(np.int16) - ref).max() <= 1, name
    assert ours.std() > 10, "an image, not a blank"
    assert _reason(Path(get_testdata_file(name))).reason == "single_frame"


def test_lossless_jpeg_2000_decodes_to_the_uncompressed_pixels() -> None:
    """The same ultrasound image stored uncompressed and as lossless JPEG 2000 (YBR_RCT): identical RGB."""
    plain, j2k = (decode_frames(_real(name), [0]) for name in ("US1_UNCR.dcm", "US1_J2KR.dcm"))
    np.testing.assert_array_equal(j2k, plain)


@pytest.mark.parametrize("encoding", ["rle", "native", "jpeg2000"])
def test_demo_cines_of_other_encodings_are_lossless_and_read_as_cines(tmp_path: Path, encoding: str) -> None:
    frames = _cine("A4C", n_frames=6, h=64, w=80)
    path = tmp_path / f"{encoding}.dcm"
    write_us_multiframe(
        path, frames, subject_id=10000032, study_id=90000001, acquisition_datetime=ACQ,
        frame_time_ms=CINE_KW["frame_time_ms"], instance_number=1, encoding=encoding,
    )  # fmt: skip
    np.testing.assert_array_equal(decode_frames(pydicom.dcmread(path), range(6)), frames)
    cine = read_cine(path, SETTINGS)
    assert cine.n_frames_in == 6 and cine.mask_source == "regions"


def test_demo_palette_still_is_written_as_palette_color_and_skipped(tmp_path: Path) -> None:
    still = synth_doppler_still(np.random.default_rng(0), height=H, width=W)
    path = tmp_path / "palette.dcm"
    write_us_still(path, still, subject_id=10000032, study_id=90000001, acquisition_datetime=ACQ, instance_number=2,
                   encoding="palette")  # fmt: skip
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "PALETTE COLOR" and ds.SamplesPerPixel == 1
    assert np.abs(decode_frames(ds, [0])[0].astype(np.int16) - still).mean() < 2, "256 colours keep the picture"
    assert _reason(path).reason == "single_frame"


def echoprime_framing(frames_rgb: np.ndarray, box: tuple[int, int, int, int], size: int = 224) -> np.ndarray:
    """EchoPrime's preprocessing as its paper's code describes it, written here apart from the stage: pixels outside
    the ultrasound region zeroed, the frame centre-cropped to a square (the longer side cut equally on both sides),
    int(10% of the side) cut from every edge, resized to size x size with cubic interpolation."""
    x0, y0, x1, y1 = box
    masked = np.zeros_like(frames_rgb)
    masked[:, y0 : y1 + 1, x0 : x1 + 1] = frames_rgb[:, y0 : y1 + 1, x0 : x1 + 1]
    h, w = masked.shape[1:3]
    pad = round(abs(w - h) / 2)  # Python's round: an odd difference leaves the crop one pixel off square
    if pad and w > h:
        masked = masked[:, :, pad:-pad]
    elif pad and h > w:
        masked = masked[:, pad:-pad]
    pad_y, pad_x = int(masked.shape[1] * 0.1), int(masked.shape[2] * 0.1)
    masked = masked[:, pad_y:-pad_y, pad_x:-pad_x]
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_CUBIC) for f in masked])


@pytest.mark.parametrize(("h", "w"), [(708, 1016), (709, 1016)], ids=["vivid", "odd-difference"])
def test_echoprime_framing_matches_an_independent_computation_on_a_real_sized_frame(
    tmp_path: Path, h: int, w: int
) -> None:
    """A GE Vivid-sized cine (708 x 1016, and one row more, whose odd difference EchoPrime crops one pixel off
    square): with framing echoprime the stored clip is EchoPrime's framing of the decoded frames (pydicom's decode,
    the ultrasound region as the mask); the sector-box framing differs from it."""
    frames = _cine("A4C", n_frames=4, h=h, w=w)
    path = _write(tmp_path / "vivid.dcm", frames)
    ds = pydicom.dcmread(path)
    region = ds.SequenceOfUltrasoundRegions[0]
    box = (
        region.RegionLocationMinX0,
        region.RegionLocationMinY0,
        region.RegionLocationMaxX1,
        region.RegionLocationMaxY1,
    )
    decoded = _pydicom_rgb(ds)
    settings = EchoSettings(frames=2, stride=2, framing="echoprime")
    cine = read_cine(path, settings)
    expected = echoprime_framing(decoded[[0, 2]], box)
    assert cine.clip.shape == (2, 224, 224, 3)
    diff = np.abs(cine.clip.astype(np.int16) - expected).mean()
    assert diff < 1.5, f"mean abs diff {diff:.2f} from EchoPrime's framing"
    boxed = read_cine(path, EchoSettings(frames=2, stride=2, framing="sector_box"))
    assert np.abs(boxed.clip.astype(np.int16) - expected).mean() > 5 * max(diff, 1), "the two framings differ"


def test_unknown_framing_is_refused() -> None:
    with pytest.raises(ValueError, match=r"echo\.framing"):
        EchoSettings(framing="letterbox")


# --------------------------------------------------------------------------- masks on demo cines


def _overlay_and_fan(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) bool: burned-in overlay (non-zero outside the sector box) and fan (non-zero inside it)."""
    h, w = frames.shape[1:3]
    x0, y0, x1, y1 = sector_region(h, w)
    inbox = np.zeros((h, w), dtype=bool)
    inbox[y0 : y1 + 1, x0 : x1 + 1] = True
    lit = frames.max(axis=(0, 3)) > 0
    return lit & ~inbox, lit & inbox


@pytest.mark.parametrize("with_regions", [True, False], ids=["regions", "image"])
@pytest.mark.parametrize(("view", "shape"), [("A4C", (H, W)), ("Apical_Doppler", (480, 640)), ("SSN", (112, 144))])
def test_mask_removes_overlays_and_keeps_the_fan(
    tmp_path: Path, with_regions: bool, view: str, shape: tuple[int, int]
) -> None:
    frames = _cine(view, n_frames=24, h=shape[0], w=shape[1], seed=5)
    path = _write(tmp_path / "c.dcm", frames, with_regions=with_regions)
    ds = pydicom.dcmread(path)
    n = int(ds.NumberOfFrames)
    idx = frame_indices(n, SETTINGS)
    if not with_regions:  # what read_cine decodes for the image-based mask
        idx += sorted(set(np.linspace(0, n - 1, SETTINGS.mask_frames).round().astype(int).tolist()) - set(idx))
    decoded = decode_frames(ds, idx)
    mask, source = sector_mask(ds, decoded, SETTINGS)
    assert source == ("regions" if with_regions else "image")
    assert mask.shape == shape and mask.dtype == bool

    overlay, fan = _overlay_and_fan(frames)
    assert overlay.sum() > 100, "the demo should have drawn text and an ECG"
    masked = decoded * mask[None, :, :, None]
    leaked = masked[:, overlay].any(axis=(0, 2)).sum()
    assert leaked == 0, f"{leaked} overlay pixels (text, ECG, scale) survive the {source} mask"
    kept = mask[fan].mean()
    assert kept >= 0.9, f"only {kept:.1%} of the fan survives the {source} mask"

    cine = read_cine(path, SETTINGS)
    assert cine.mask_source == source


def test_regions_mask_drops_static_text_inside_the_box(tmp_path: Path) -> None:
    frames = _cine("A4C", n_frames=20)
    _, y0, x1, _ = sector_region(H, W)
    text = np.zeros((H, W), dtype=np.uint8)
    cv2.putText(text, "TIS0.4", (x1 - 48, y0 + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 255, 1, cv2.LINE_AA)
    text_px = text > 60
    frames[:, text_px] = 200  # a static label in the box corner, outside the fan
    ds = pydicom.dcmread(_write(tmp_path / "c.dcm", frames))
    decoded = decode_frames(ds, frame_indices(20, SETTINGS))
    mask, source = sector_mask(ds, decoded, SETTINGS)
    assert source == "regions"
    assert not mask[text_px].any(), f"{mask[text_px].sum()} label pixels kept"
    assert mask[_overlay_and_fan(frames)[1] & ~cv2.dilate(text, np.ones((5, 5), np.uint8)).astype(bool)].mean() > 0.99


def test_frozen_cine_without_regions_keeps_the_whole_frame(tmp_path: Path) -> None:
    frames = np.repeat(_cine("A2C", n_frames=1), 6, axis=0)
    cine = read_cine(_write(tmp_path / "c.dcm", frames, with_regions=False), SETTINGS)
    assert cine.mask_source == "full"


# --------------------------------------------------------------------------- clip geometry


def test_frame_indices() -> None:
    assert frame_indices(40, SETTINGS) == list(range(0, 32, 2))
    assert frame_indices(10, SETTINGS) == [0, 2, 4, 6, 8]
    assert frame_indices(11, SETTINGS) == [0, 2, 4, 6, 8, 10]
    assert frame_indices(1, SETTINGS) == [0]
    assert frame_indices(0, SETTINGS) == []
    assert frame_indices(100, EchoSettings(frames=4, stride=3)) == [0, 3, 6, 9]


def test_clip_shape_for_a_long_cine(tmp_path: Path) -> None:
    cine = read_cine(_write(tmp_path / "c.dcm", _cine(n_frames=40)), SETTINGS)
    assert isinstance(cine, Cine)
    assert cine.clip.shape == (16, 224, 224, 3) and cine.clip.dtype == np.uint8
    assert cine.view_frame.shape == (224, 224, 3) and cine.view_frame.dtype == np.uint8
    np.testing.assert_array_equal(cine.view_frame, cine.clip[0])
    assert (cine.n_frames_in, cine.n_frames_used) == (40, 16)
    assert cine.frame_time_ms == pytest.approx(33.3)
    assert all(cine.clip[i].max() > 50 for i in range(16))


def test_short_cine_is_zero_padded(tmp_path: Path) -> None:
    settings = EchoSettings(size=112, classify_size=64)
    cine = read_cine(_write(tmp_path / "c.dcm", _cine(n_frames=10)), settings)
    assert cine.clip.shape == (16, 112, 112, 3)
    assert cine.n_frames_used == 5
    assert all(cine.clip[i].max() > 50 for i in range(5)), "the 5 real frames (0, 2, 4, 6, 8) are there"
    assert not cine.clip[5:].any(), "frames after the last real one are zero"
    assert cine.view_frame.shape == (64, 64, 3)
    # Same picture at two sizes (speckle differs after cubic resizing, so compare coarse 16 x 16 versions).
    coarse_clip = cv2.resize(cine.clip[0], (16, 16), interpolation=cv2.INTER_AREA).astype(np.int16)
    coarse_view = cv2.resize(cine.view_frame, (16, 16), interpolation=cv2.INTER_AREA).astype(np.int16)
    assert np.abs(coarse_clip - coarse_view).mean() < 3


def test_square_crop_resize_takes_the_centred_square_of_the_box() -> None:
    """docs/SIGNALS.md, Echo: centre-crop to a square (EchoPrime's crop), then cut `zoom` of the side per edge."""
    columns = np.broadcast_to(np.arange(200, dtype=np.uint8)[None, :, None], (100, 200, 3))
    frames = np.ascontiguousarray(np.broadcast_to(columns, (2, 100, 200, 3)))
    mask = np.zeros((100, 200), dtype=bool)
    mask[20:60, 40:160] = True  # a 40 x 120 box centred on column 100 -> the square is columns 80..119
    out = square_crop_resize(frames, mask, 40)
    assert out.shape == (2, 40, 40, 3) and out.dtype == np.uint8
    assert abs(int(out[0, 20, 0, 0]) - 80) <= 1 and abs(int(out[0, 20, -1, 0]) - 119) <= 1
    zoomed = square_crop_resize(frames, mask, 32, zoom=0.1)  # 4 of 40 px cut per edge -> columns 84..115
    assert abs(int(zoomed[0, 16, 0, 0]) - 84) <= 1 and abs(int(zoomed[0, 16, -1, 0]) - 115) <= 1
    outside = frames.copy()
    outside[:, :, :, :] = 255
    inner = np.zeros((100, 200), dtype=bool)
    inner[45:55, 95:105] = True
    masked = square_crop_resize(outside, inner, 20)
    assert masked.min() == 255, "a crop wholly inside the mask keeps every pixel"
    with pytest.raises(ValueError):
        square_crop_resize(frames, np.zeros((100, 200), dtype=bool), 60)


def test_views_are_echoprimes_and_shared_with_the_demo() -> None:
    from hftri_mimic.demo import echo as demo_echo
    from hftri_mimic.demo import records

    assert len(VIEWS) == 11 and VIEWS[0] == "A2C" and VIEWS[-1] == "Subcostal"
    assert demo_echo.VIEWS is VIEWS and records.ECHO_VIEWS is VIEWS


# --------------------------------------------------------------------------- faults


def _reason(path: Path) -> EchoExclusion:
    with pytest.raises(EchoExclusion) as info:
        read_cine(path, SETTINGS)
    err = info.value
    assert err.reason in EXCLUSION_REASONS
    assert str(path.parent) not in str(err), "no paths in the exclusion detail"
    return err


def test_missing_and_not_dicom(tmp_path: Path) -> None:
    assert _reason(tmp_path / "nope.dcm").reason == "missing_file"
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert _reason(junk).reason == "unreadable"
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    assert _reason(empty).reason == "unreadable"


def test_truncated_files(tmp_path: Path) -> None:
    full = _write(tmp_path / "c.dcm", _cine(n_frames=40))
    data = full.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: int(0.6 * len(data))])  # inside the pixel data: the header is whole
    err = _reason(cut)
    assert err.reason == "truncated", err
    assert err.status == "excluded"

    head = tmp_path / "head.dcm"
    head.write_bytes(data[:300])  # inside the file meta / header
    assert _reason(head).reason in ("unreadable", "truncated")

    ds = pydicom.dcmread(full)
    ds.NumberOfFrames = 50  # header promises more frames than are encoded
    ds.save_as(tmp_path / "few.dcm")
    err = _reason(tmp_path / "few.dcm")
    assert err.reason == "truncated" and "40 of 50" in err.detail


def test_corrupt_frame_is_truncated(tmp_path: Path) -> None:
    ds = pydicom.dcmread(_write(tmp_path / "c.dcm", _cine(n_frames=8)))
    jpegs = list(generate_frames(ds.PixelData, number_of_frames=8))
    jpegs[4] = jpegs[4][: len(jpegs[4]) // 2]  # frame 4 (in the clip) cut in half
    ds.PixelData = encapsulate(jpegs)
    ds.save_as(tmp_path / "bad.dcm")
    err = _reason(tmp_path / "bad.dcm")
    assert err.reason == "truncated" and "frame 4" in err.detail


def _file_meta(sop_class: str, ts: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def test_not_ultrasound(tmp_path: Path) -> None:
    sr = Dataset()
    sr.file_meta = _file_meta("1.2.840.10008.5.1.4.1.1.88.11", ExplicitVRLittleEndian)  # Basic Text SR
    sr.SOPClassUID = sr.file_meta.MediaStorageSOPClassUID
    sr.SOPInstanceUID = sr.file_meta.MediaStorageSOPInstanceUID
    sr.Modality = "SR"
    sr.PatientID = "10000032"
    sr.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    assert _reason(tmp_path / "sr.dcm").reason == "not_ultrasound"

    ds = pydicom.dcmread(_write(tmp_path / "c.dcm", _cine(n_frames=4)))
    del ds.PixelData  # an ultrasound header without any image
    ds.save_as(tmp_path / "nopix.dcm")
    assert _reason(tmp_path / "nopix.dcm").reason == "not_ultrasound"

    ds = pydicom.dcmread(tmp_path / "c.dcm")
    ds.Modality = "CT"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.save_as(tmp_path / "ct.dcm")
    assert _reason(tmp_path / "ct.dcm").reason == "not_ultrasound"


def test_still_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "still.dcm"
    write_us_still(
        path,
        synth_doppler_still(np.random.default_rng(0), height=H, width=W),
        subject_id=10000032,
        study_id=90000001,
        acquisition_datetime=ACQ,
        instance_number=2,
    )
    err = _reason(path)
    assert err.reason == "single_frame" and err.status == "skipped"


@pytest.mark.parametrize("ts", [MPEG2MPML, "1.2.826.0.1.3680043.9.9999.1"], ids=["mpeg2", "private"])
def test_unsupported_transfer_syntax(tmp_path: Path, ts: str) -> None:
    ds = pydicom.dcmread(_write(tmp_path / "c.dcm", _cine(n_frames=4)))
    ds.file_meta.TransferSyntaxUID = ts
    ds.PixelData = encapsulate([np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes()])
    ds["PixelData"].is_undefined_length = True
    ds.save_as(tmp_path / "u.dcm")
    assert _reason(tmp_path / "u.dcm").reason == "unsupported_transfer_syntax"


def test_exclusion_rejects_unknown_reasons() -> None:
    with pytest.raises(ValueError):
        EchoExclusion("bad_luck")


# --------------------------------------------------------------------------- speed


def test_decode_speed_vs_pixel_array_printed(tmp_path: Path) -> None:
    ds = pydicom.dcmread(_write(tmp_path / "c.dcm", _cine(n_frames=40, h=480, w=640)))
    idx = frame_indices(40, SETTINGS)
    t0 = time.perf_counter()
    ours = decode_frames(ds, idx)
    t1 = time.perf_counter()
    full = ds.pixel_array
    t2 = time.perf_counter()
    assert np.abs(ours.astype(np.int16) - full[idx]).mean() < 0.5
    print(
        f"\n480x640 JPEG cine, 40 frames: decode_frames(16 frames) {1000 * (t1 - t0):.1f} ms, "
        f"ds.pixel_array (40 frames) {1000 * (t2 - t1):.1f} ms, ratio {(t2 - t1) / (t1 - t0):.0f}x"
    )
