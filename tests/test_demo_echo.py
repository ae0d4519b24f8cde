"""Tests for the synthetic MIMIC-IV-ECHO renderer and DICOM writers (hftri_mimic.demo.echo)."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.pixels import pixel_array
from pydicom.uid import (
    JPEGBaseline8Bit,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
)

from hftri_mimic.demo import echo
from hftri_mimic.demo.echo import VIEWS, sector_region, spectral_region, synth_cine

H, W = 192, 256
ACQ = datetime(2180, 7, 14, 10, 31, 7, 250000)
CINE_KW = {"lv_scale": 1.0, "wall_motion": 0.25, "hr_bpm": 72.0, "frame_time_ms": 33.3}


def _cine(view: str, seed: int = 0, n_frames: int = 8, **kw: float) -> np.ndarray:
    params = {**CINE_KW, **kw}
    return synth_cine(np.random.default_rng(seed), view=view, n_frames=n_frames, height=H, width=W, **params)


def _fan_mask(height: int = H, width: int = W, margin: float = -1.5) -> np.ndarray:
    """Boolean (h, w) fan mask inside the sector box, recomputed independently.

    ``margin`` px (and margin / 1.5 degrees) grows (> 0) or shrinks (< 0) the fan.
    """
    x0, y0, x1, y1 = sector_region(height, width)
    cx, radius = (width - 1) / 2.0, echo._RADIUS_FRAC * height
    xs = np.arange(x0, x1 + 1) - cx
    ys = np.arange(y0, y1 + 1) - y0
    r = np.hypot(xs[None, :], ys[:, None])
    theta = np.degrees(np.arctan2(xs[None, :], ys[:, None]))
    return (r <= radius + margin) & (np.abs(theta) <= 37.5 + margin / 1.5)


def _green(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    return (g > 120) & (r < 100) & (b < 100)


def _red_blue(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    return (r > 120) & (b < 60) & (r - g > 60), (b > 120) & (r < 60) & (b - g > 60)


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("shape", [(192, 256), (64, 64), (112, 112), (600, 800), (708, 1016)])
def test_sector_region_inside_image(shape: tuple[int, int]) -> None:
    h, w = shape
    x0, y0, x1, y1 = sector_region(h, w)
    assert 0 <= x0 < x1 <= w - 1 and 0 <= y0 < y1 <= h - 1
    assert (y1 - y0) >= 0.75 * h  # radius ~0.8 h
    assert abs((x0 + x1) / 2 - (w - 1) / 2) <= 1  # apex at top centre
    assert all(isinstance(v, int) for v in (x0, y0, x1, y1))


def test_synth_cine_shape_dtype_and_determinism() -> None:
    a = _cine("A4C", seed=7)
    b = _cine("A4C", seed=7)
    c = _cine("A4C", seed=8)
    assert a.shape == (8, H, W, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c).mean() > 1.0
    assert not np.array_equal(a[0], a[4])  # frames differ (speckle, motion)
    with pytest.raises(ValueError):
        _cine("A6C")


@pytest.mark.parametrize("view", ["A4C", "Apical_Doppler", "Subcostal"])
def test_overlays_outside_sector_and_speckle_inside(view: str) -> None:
    frames = _cine(view, seed=3, n_frames=8)
    x0, y0, x1, y1 = sector_region(H, W)
    inbox = np.zeros((H, W), dtype=bool)
    inbox[y0 : y1 + 1, x0 : x1 + 1] = True

    # ECG: green trace present, entirely below the sector box
    green = _green(frames)
    assert green.sum() > 8 * 50
    rows = np.flatnonzero(green.any(axis=(0, 2)))
    assert rows.min() > y1
    assert not green[:, inbox].any()

    # text above the box, depth ticks right of it
    white = frames[0].min(axis=-1) > 200
    assert white[:y0].sum() > 30
    assert white[y0 : y1 + 1, x1 + 1 :].sum() > 10

    # outside the box everything is static overlay except the moving ECG cursor
    outside = frames[:, ~inbox]
    changed = (outside != outside[:1]).any(axis=(0, 2))
    changed_rows = np.nonzero(~inbox)[0][changed]  # same C order as frames[:, ~inbox]
    assert changed_rows.size > 0 and changed_rows.min() > y1

    # inside the box: black outside the fan, speckle inside it
    fan = _fan_mask()
    crop = frames[:, y0 : y1 + 1, x0 : x1 + 1]
    bx_h, bx_w = crop.shape[1:3]
    outer = _fan_mask(margin=1.5)
    assert outer.shape == (bx_h, bx_w)
    assert crop[:, ~outer].max() == 0
    grey = crop[0].astype(np.float32).mean(axis=-1)
    high = grey - cv2.GaussianBlur(grey, (0, 0), 3.0)
    tissue = fan & (grey > 40)
    assert tissue.sum() > 2000
    assert high[tissue].std() > 10.0


def test_every_view_renders_fast_enough_to_print() -> None:
    rng = np.random.default_rng(0)
    for view in VIEWS:
        synth_cine(rng, view=view, n_frames=2, height=H, width=W, **CINE_KW)
    t0 = time.perf_counter()
    reps = 10
    for _ in range(reps):
        synth_cine(rng, view="Apical_Doppler", n_frames=16, height=H, width=W, **CINE_KW)
    ms = (time.perf_counter() - t0) / reps * 1000
    print(f"synth_cine 16x{H}x{W} Apical_Doppler: {ms:.1f} ms")


# --------------------------------------------------------------------------- views


def _view_dataset(seed: int, per_view: int) -> tuple[np.ndarray, np.ndarray]:
    """Single random frames downsampled to 64x64 then 32x32 RGB, flattened."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for label, view in enumerate(VIEWS):
        for _ in range(per_view):
            frame = synth_cine(
                rng,
                view=view,
                n_frames=1,
                height=H,
                width=W,
                lv_scale=rng.uniform(0.9, 1.6),
                wall_motion=rng.uniform(0.03, 0.35),
                hr_bpm=rng.uniform(50.0, 120.0),
                frame_time_ms=rng.uniform(15.0, 40.0),
            )[0]
            small = cv2.resize(frame, (64, 64), interpolation=cv2.INTER_AREA)
            small = cv2.resize(small, (32, 32), interpolation=cv2.INTER_AREA)
            xs.append(small.reshape(-1).astype(np.float32) / 255.0)
            ys.append(label)
    return np.stack(xs), np.array(ys)


def test_views_are_separable_from_one_small_frame() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, y_train = _view_dataset(seed=101, per_view=20)
    x_test, y_test = _view_dataset(seed=202, per_view=10)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
    clf.fit(x_train, y_train)
    acc = float((clf.predict(x_test) == y_test).mean())
    centroids = np.stack([x_train[y_train == k].mean(axis=0) for k in range(len(VIEWS))])
    nearest = np.argmin(((x_test[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    acc_nc = float((nearest == y_test).mean())
    print(f"view separability (32x32 RGB): logistic {acc:.3f}, nearest centroid {acc_nc:.3f}")
    assert acc >= 0.90
    assert acc_nc >= 0.80


def test_doppler_views_have_colour_and_others_do_not() -> None:
    x0, y0, x1, y1 = sector_region(H, W)
    for view in VIEWS:
        crop = _cine(view, seed=5, n_frames=4)[:, y0 : y1 + 1, x0 : x1 + 1]
        red, blue = _red_blue(crop)
        if "Doppler" in view:
            assert red.sum() > 100 and blue.sum() > 100, view
        else:
            assert red.sum() + blue.sum() == 0, view


# --------------------------------------------------------------------------- LV size/motion


def _dark_area(frames: np.ndarray) -> np.ndarray:
    """Blood-pool (dark) pixel count inside the fan per frame: (n,)."""
    x0, y0, x1, y1 = sector_region(H, W)
    grey = frames[:, y0 : y1 + 1, x0 : x1 + 1].astype(np.float32).mean(axis=-1)
    return ((grey < 30) & _fan_mask()).sum(axis=(1, 2))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lv_scale_and_wall_motion_are_planted(seed: int) -> None:
    def area(lv: float, wm: float) -> np.ndarray:
        return _dark_area(_cine("A4C", seed=seed, n_frames=32, lv_scale=lv, wall_motion=wm))

    normal, dilated = area(1.0, 0.25), area(1.5, 0.25)
    assert dilated.mean() > 1.15 * normal.mean()
    good, poor = area(1.0, 0.25), area(1.0, 0.05)
    assert good.std() > 1.8 * poor.std()
    # a beat at 72 bpm is ~25 frames of 33 ms: the minimum (end-systole) is well below max
    assert good.min() < 0.92 * good.max()


# --------------------------------------------------------------------------- still


def test_doppler_still_layout() -> None:
    img = echo.synth_doppler_still(np.random.default_rng(4), height=H, width=W)
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img, echo.synth_doppler_still(np.random.default_rng(4), height=H, width=W))
    x0, y0, x1, y1 = spectral_region(H, W)
    strip = img[y0 : y1 + 1, x0 : x1 + 1].astype(int)
    assert (strip.max(axis=-1) == strip.min(axis=-1)).all()  # grey strip
    assert np.median(strip) < 40  # dark background
    assert (strip > 180).sum() > 200  # bright envelope
    green = _green(img)
    assert green.sum() > 50 and np.flatnonzero(green.any(axis=1)).min() > y1
    sx0, sy0, sx1, sy1 = echo._still_geometry(H, W).box
    assert sy1 < y0 and img[sy0 : sy1 + 1, sx0 : sx1 + 1].std() > 10  # 2-D sector above


# --------------------------------------------------------------------------- DICOM


@pytest.fixture(scope="module")
def doppler_frames() -> np.ndarray:
    frames = _cine("Doppler_Parasternal_Long", seed=11, n_frames=6)
    red, blue = _red_blue(frames)
    assert (red.sum(axis=(1, 2)) > 300).all() and (blue.sum(axis=(1, 2)) > 300).all()
    return frames


def _colour_blocks() -> np.ndarray:
    """(1, H, W, 3) frame with large saturated red/blue/green/yellow/grey blocks."""
    img = np.zeros((1, H, W, 3), dtype=np.uint8)
    colours = [(230, 20, 20), (20, 20, 230), (20, 200, 20), (240, 220, 30), (128, 128, 128)]
    for i, c in enumerate(colours):
        img[0, 16:176, 8 + i * 48 : 8 + i * 48 + 44] = c
    return img


def _assert_close_rgb(decoded: np.ndarray, expected: np.ndarray) -> None:
    assert decoded.shape == expected.shape and decoded.dtype == np.uint8
    diff = decoded.astype(np.float64) - expected
    mad = np.abs(diff).reshape(-1, 3).mean(axis=0)
    assert (mad <= 4.0).all(), mad
    bias = diff.reshape(-1, 3).mean(axis=0)  # a tint or double conversion shows here
    assert (np.abs(bias) <= 1.5).all(), bias


def test_write_us_multiframe_roundtrip(tmp_path: Path, doppler_frames: np.ndarray) -> None:
    path = tmp_path / "files" / "p10" / "p10002221" / "s94106955" / "94106955_0001.dcm"
    echo.write_us_multiframe(
        path,
        doppler_frames,
        subject_id=10002221,
        study_id=94106955,
        acquisition_datetime=ACQ,
        frame_time_ms=33.3,
        instance_number=1,
    )
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert ds.file_meta.MediaStorageSOPClassUID == UltrasoundMultiFrameImageStorage
    assert ds.SOPClassUID == UltrasoundMultiFrameImageStorage
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    assert ds.Modality == "US" and ds.ManufacturerModelName == "Vivid E95"
    assert ds.PhotometricInterpretation == "YBR_FULL_422"
    assert (ds.SamplesPerPixel, ds.PlanarConfiguration) == (3, 0)
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (8, 8, 7, 0)
    assert (ds.Rows, ds.Columns, int(ds.NumberOfFrames)) == (H, W, len(doppler_frames))
    assert float(ds.FrameTime) == pytest.approx(33.3)
    assert ds.FrameIncrementPointer == 0x00181063
    assert int(ds.CineRate) == 30
    assert ds.PatientID == "10002221" and ds.StudyID == "94106955"
    assert ds.InstanceNumber == 1
    assert ds.StudyDate == "21800714" and ds.StudyTime.startswith("103107")
    assert ds.AcquisitionDateTime.startswith("21800714103107")
    assert ds.LossyImageCompression == "01" and ds.BurnedInAnnotation == "YES"
    (region,) = ds.SequenceOfUltrasoundRegions
    assert (region.RegionSpatialFormat, region.RegionDataType, region.RegionFlags) == (1, 1, 2)
    box = (
        region.RegionLocationMinX0,
        region.RegionLocationMinY0,
        region.RegionLocationMaxX1,
        region.RegionLocationMaxY1,
    )
    assert box == sector_region(H, W)
    assert (region.PhysicalUnitsXDirection, region.PhysicalUnitsYDirection) == (3, 3)
    assert 0.01 < region.PhysicalDeltaX < 0.5 and region.PhysicalDeltaX == region.PhysicalDeltaY

    # colour round trip: pydicom returns RGB (YBR_FULL_422 -> RGB via as_rgb)
    _assert_close_rgb(ds.pixel_array, doppler_frames)
    decoded_red, decoded_blue = _red_blue(ds.pixel_array)
    red, blue = _red_blue(doppler_frames)
    assert (decoded_red & red).sum() > 0.8 * red.sum()
    assert (decoded_blue & blue).sum() > 0.8 * blue.sum()
    for plugin in ("pylibjpeg", "pillow"):
        _assert_close_rgb(pixel_array(path, decoding_plugin=plugin), doppler_frames)
    # the stored samples really are YCbCr: grey pixels have Cb = Cr = 128
    raw = pixel_array(path, as_rgb=False)
    black = doppler_frames.max(axis=-1) == 0
    assert np.abs(raw[black][:, 1:].astype(int) - 128).mean() < 2

    # deterministic UIDs
    again = tmp_path / "again.dcm"
    echo.write_us_multiframe(
        again,
        doppler_frames[:2],
        subject_id=10002221,
        study_id=94106955,
        acquisition_datetime=ACQ,
        frame_time_ms=33.3,
        instance_number=1,
        with_regions=False,
    )
    other = tmp_path / "other.dcm"
    echo.write_us_multiframe(
        other,
        doppler_frames[:2],
        subject_id=10002221,
        study_id=94106955,
        acquisition_datetime=ACQ,
        frame_time_ms=33.3,
        instance_number=2,
    )
    ds2, ds3 = pydicom.dcmread(again), pydicom.dcmread(other)
    assert "SequenceOfUltrasoundRegions" not in ds2
    assert ds2.SOPInstanceUID == ds.SOPInstanceUID
    assert ds3.SOPInstanceUID != ds.SOPInstanceUID
    assert ds3.StudyInstanceUID == ds.StudyInstanceUID
    assert ds3.SeriesInstanceUID == ds.SeriesInstanceUID


def test_saturated_colours_survive_without_tint(tmp_path: Path) -> None:
    blocks = _colour_blocks()
    path = tmp_path / "blocks.dcm"
    echo.write_us_multiframe(
        path,
        blocks,
        subject_id=1,
        study_id=2,
        acquisition_datetime=ACQ,
        frame_time_ms=20.0,
        instance_number=3,
        quality=95,
    )
    decoded = pydicom.dcmread(path).pixel_array
    assert decoded.shape == blocks.shape[1:]  # pydicom drops the frame axis for 1 frame
    decoded = decoded[None]
    for i in range(5):  # block interiors (away from chroma-subsampled edges)
        expected = blocks[0, 96, 8 + i * 48 + 22].astype(int)
        got = decoded[0, 40:150, 8 + i * 48 + 8 : 8 + i * 48 + 36].reshape(-1, 3).mean(axis=0)
        assert np.abs(got - expected).max() < 6, (i, got, expected)


def test_write_us_still_roundtrip(tmp_path: Path) -> None:
    img = echo.synth_doppler_still(np.random.default_rng(9), height=H, width=W)
    path = tmp_path / "deep" / "dir" / "94106955_0042.dcm"
    echo.write_us_still(
        path,
        img,
        subject_id=10002221,
        study_id=94106955,
        acquisition_datetime=ACQ,
        instance_number=42,
    )
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert ds.SOPClassUID == UltrasoundImageStorage
    assert ds.PhotometricInterpretation == "YBR_FULL_422" and ds.Modality == "US"
    assert "NumberOfFrames" not in ds
    assert ds.InstanceNumber == 42
    regions = {int(r.RegionDataType): r for r in ds.SequenceOfUltrasoundRegions}
    spectral = regions[3]
    assert spectral.RegionSpatialFormat == 3
    box = (
        spectral.RegionLocationMinX0,
        spectral.RegionLocationMinY0,
        spectral.RegionLocationMaxX1,
        spectral.RegionLocationMaxY1,
    )
    assert box == spectral_region(H, W)
    assert (spectral.PhysicalUnitsXDirection, spectral.PhysicalUnitsYDirection) == (4, 7)
    assert regions[1].RegionSpatialFormat == 1
    decoded = ds.pixel_array
    assert decoded.shape == (H, W, 3)
    _assert_close_rgb(decoded[None], img[None])


def test_writers_reject_bad_arrays(tmp_path: Path) -> None:
    kw = {"subject_id": 1, "study_id": 2, "acquisition_datetime": ACQ, "instance_number": 1}
    with pytest.raises(ValueError):
        echo.write_us_multiframe(tmp_path / "a.dcm", np.zeros((H, W, 3), np.uint8), frame_time_ms=20.0, **kw)
    with pytest.raises(ValueError):
        echo.write_us_still(tmp_path / "b.dcm", np.zeros((H, W, 3), np.float32), **kw)
