r"""Synthetic MIMIC-IV-ECHO studies: GE Vivid-like echocardiogram cines and stills as DICOM.

The real MIMIC-IV-ECHO release contains GE Vivid ultrasound DICOMs: multi-frame cines
(Ultrasound Multi-frame Image Storage, JPEG Baseline, ``YBR_FULL_422``) and single-frame
stills (mostly spectral Doppler).  This module renders look-alike screens from a few
geometric primitives plus Rayleigh speckle and writes them with the same DICOM layout,
so that the downstream view classifier / measurement code can run on the demo source.

Screen layout (any ``height`` x ``width``, designed for 4:3 such as 192 x 256)::

    +---------------------------------------------+
    | GE Vivid E95                   30Hz HR 72bpm |   text band (above the sector box)
    | 2D  .-------- sector box ----------.  -      |
    | Gn  |        /\  (apex)            |  - 5    |   left margin: labels, colour bar
    |     |       /  \  speckle, dark    |  -      |   right margin: depth scale ticks
    |     |      /    \ chambers         |  - 10   |
    |     |     /______\                 |  -      |
    |     '------------------------------'         |
    |  ~~~~~~~~/\~~~~~~~~~~~~/\~~~~~|~~~~~~~~~~    |   ECG band (green trace, cursor)
    +---------------------------------------------+

Every overlay pixel (text, ticks, ECG, colour bar) lies outside
:func:`sector_region`'s box; everything inside the box is image data.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from datetime import datetime
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)
from pydicom.valuerep import DSfloat

from hftri_mimic.echo.dicom import VIEWS  # the 11 EchoPrime view classes, in EchoPrime's order

__all__ = [
    "VIEWS",
    "sector_region",
    "spectral_region",
    "synth_cine",
    "synth_doppler_still",
    "write_us_multiframe",
    "write_us_still",
]


# --------------------------------------------------------------------------- geometry

_HALF_ANGLE = math.radians(37.5)  # 75 degree sector opening
_APEX_FRAC = 0.075  # apex row as a fraction of the height (text band above it)
_RADIUS_FRAC = 0.80  # sector radius as a fraction of the height (ECG band below it)
_DEPTH_CM = 16.0  # imaging depth shown by the sector radius

_BLOOD = 5  # echogenicity of blood (near black)
_BLOOD_MAX = 40  # echo-map level below which a pixel counts as blood for colour flow
_UID_ROOT = "hftri-mimic-demo-echo"


@dataclass(frozen=True)
class _Geometry:
    """Pixel geometry of one fan: apex ``(cx, apex_y)``, ``radius`` and inclusive box."""

    height: int
    width: int
    cx: float
    apex_y: float
    radius: float
    half_angle: float
    box: tuple[int, int, int, int]

    @property
    def crop_shape(self) -> tuple[int, int]:
        """(rows, cols) of the box."""
        x0, y0, x1, y1 = self.box
        return y1 - y0 + 1, x1 - x0 + 1

    def to_crop(self, u: float, v: float) -> tuple[float, float]:
        """Normalised fan coordinates (u right, v depth; radius units) -> crop pixels."""
        return self.cx + u * self.radius - self.box[0], self.apex_y + v * self.radius - self.box[1]


def _fan_geometry(height: int, width: int, *, cx: float, apex_y: float, radius: float) -> _Geometry:
    half_w = radius * math.sin(_HALF_ANGLE)
    x0 = max(0, math.floor(cx - half_w))
    x1 = min(width - 1, math.ceil(cx + half_w))
    y0 = max(0, math.floor(apex_y))
    y1 = min(height - 1, math.ceil(apex_y + radius))
    return _Geometry(height, width, cx, apex_y, radius, _HALF_ANGLE, (x0, y0, x1, y1))


@functools.lru_cache(maxsize=32)
def _screen_geometry(height: int, width: int) -> _Geometry:
    if height < 16 or width < 16:
        raise ValueError(f"image too small: {height}x{width}")
    cx = (width - 1) / 2.0
    radius = min(_RADIUS_FRAC * height, 0.47 * width / math.sin(_HALF_ANGLE))
    return _fan_geometry(height, width, cx=cx, apex_y=round(_APEX_FRAC * height), radius=radius)


def sector_region(height: int, width: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) bounding box of the ultrasound sector (inclusive), as stored in
    SequenceOfUltrasoundRegions (RegionLocationMinX0/MinY0/MaxX1/MaxY1).

    The fan (apex at top centre, 75 degree opening, radius 0.8 * height) lies inside the
    box; all burned-in overlays (text, depth ticks, ECG, colour bar) lie outside it.
    """
    return _screen_geometry(height, width).box


def spectral_region(height: int, width: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) inclusive box of the spectral strip in :func:`synth_doppler_still`."""
    x0, x1 = round(0.04 * width), round(0.86 * width)
    y0, y1 = round(0.40 * height), round(0.84 * height)
    return x0, y0, x1, y1


_SPECTRAL_FULL_CM_S = 100.0  # velocity at the top of the spectral strip


def _spectral_baseline(strip_rows: int) -> int:
    """Row of the zero-velocity baseline inside a spectral strip of ``strip_rows`` rows."""
    return round(0.62 * (strip_rows - 1))


def _still_geometry(height: int, width: int) -> _Geometry:
    """The small 2-D sector at the top of a spectral Doppler still."""
    return _fan_geometry(height, width, cx=(width - 1) / 2.0, apex_y=round(0.075 * height), radius=0.30 * height)


@functools.lru_cache(maxsize=32)
def _polar(geom: _Geometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per crop pixel: depth r (radius units), angle theta (rad, + to the right), fan mask.

    All three are read-only arrays of the crop shape (h, w).
    """
    h, w = geom.crop_shape
    x0, y0 = geom.box[0], geom.box[1]
    xs = (np.arange(w, dtype=np.float32) + x0 - geom.cx) / geom.radius
    ys = (np.arange(h, dtype=np.float32) + y0 - geom.apex_y) / geom.radius
    r = np.hypot(xs[None, :], ys[:, None]).astype(np.float32)
    theta = np.arctan2(xs[None, :], ys[:, None]).astype(np.float32)
    fan = (r <= 1.0) & (np.abs(theta) <= geom.half_angle)
    for arr in (r, theta, fan):
        arr.flags.writeable = False
    return r, theta, fan


# --------------------------------------------------------------------------- anatomy


@dataclass(frozen=True)
class _Shape:
    """One drawing primitive in normalised fan coordinates (radius units).

    kind: "chamber" (bright wall ellipse + dark cavity), "blob" (filled ellipse),
    "arc" (thick elliptic arc; ``extra`` = (start_deg, end_deg, thickness, wall)),
    "seg" (thick line from (u, v) to (a, b); ``extra`` = (thickness, wall)),
    "band" (annulus between depths ``v`` and ``a``).
    role: "static", "lv" (scaled by lv_scale, contracts with wall_motion), "rv"
    (fixed mild contraction) or "atrium" (fills during systole).
    """

    kind: str
    u: float
    v: float
    a: float
    b: float = 0.0
    angle: float = 0.0
    value: float = _BLOOD
    wall: float = 0.0
    wall_value: float = 150.0
    role: str = "static"
    extra: tuple[float, ...] = ()


def _ch(
    u: float,
    v: float,
    a: float,
    b: float,
    angle: float = 0.0,
    wall: float = 0.02,
    role: str = "static",
    wall_value: float = 150.0,
) -> _Shape:
    return _Shape("chamber", u, v, a, b, angle, _BLOOD, wall, wall_value, role)


_PERICARDIUM = _Shape("arc", 0.0, 0.46, 0.36, 0.44, 0.0, 225.0, extra=(25.0, 155.0, 0.022, 0.0))

_A4C = (
    _ch(-0.12, 0.41, 0.075, 0.17, 12.0, 0.025, "rv"),
    _ch(0.125, 0.40, 0.095, 0.20, -12.0, 0.035, "lv"),
    _ch(-0.13, 0.725, 0.085, 0.09, 0.0, 0.02, "atrium"),
    _ch(0.13, 0.725, 0.095, 0.095, 0.0, 0.02, "atrium"),
    _PERICARDIUM,
)
_A5C = (
    _ch(-0.14, 0.41, 0.075, 0.17, 12.0, 0.025, "rv"),
    _ch(0.14, 0.40, 0.095, 0.20, -12.0, 0.035, "lv"),
    _ch(-0.17, 0.74, 0.08, 0.085, 0.0, 0.02, "atrium"),
    _ch(0.17, 0.74, 0.085, 0.085, 0.0, 0.02, "atrium"),
    _ch(0.0, 0.68, 0.04, 0.14, 0.0, 0.02),  # aortic outflow between the atria
    _PERICARDIUM,
)
_VIEW_SHAPES: dict[str, tuple[_Shape, ...]] = {
    "A4C": _A4C,
    "A2C": (
        _ch(0.02, 0.40, 0.105, 0.21, 0.0, 0.035, "lv"),
        _ch(0.02, 0.745, 0.105, 0.10, 0.0, 0.02, "atrium"),
        _PERICARDIUM,
    ),
    "A3C": (
        _ch(-0.03, 0.40, 0.10, 0.21, 8.0, 0.035, "lv"),
        _ch(-0.13, 0.745, 0.09, 0.095, 0.0, 0.02, "atrium"),
        _ch(0.14, 0.71, 0.045, 0.15, -35.0, 0.02),  # outflow tract / aorta
        _PERICARDIUM,
    ),
    "A5C": _A5C,
    "Parasternal_Long": (
        _ch(0.0, 0.30, 0.26, 0.05, -8.0, 0.02, "rv"),
        _ch(-0.10, 0.52, 0.28, 0.09, -8.0, 0.04, "lv"),
        _ch(0.25, 0.45, 0.16, 0.055, -8.0, 0.02),  # aortic root
        _ch(0.25, 0.70, 0.11, 0.09, 0.0, 0.02, "atrium"),
        _Shape("seg", -0.45, 0.80, 0.45, 0.86, value=225.0, extra=(0.025, 0.0)),
    ),
    "Parasternal_Short": (
        _ch(-0.08, 0.33, 0.20, 0.07, -20.0, 0.02, "rv"),
        _ch(0.02, 0.57, 0.13, 0.13, 0.0, 0.075, "lv", wall_value=165.0),  # the donut
        _Shape("blob", -0.05, 0.63, 0.025, 0.02, 0.0, 150.0),  # papillary muscles
        _Shape("blob", 0.09, 0.62, 0.025, 0.02, 0.0, 150.0),
        _Shape("arc", 0.02, 0.57, 0.27, 0.27, 0.0, 225.0, extra=(20.0, 160.0, 0.022, 0.0)),
    ),
    "Subcostal": (
        _Shape("band", 0.0, 0.04, 0.34, value=165.0),  # liver
        _Shape("seg", -0.40, 0.36, 0.40, 0.36, value=215.0, extra=(0.02, 0.0)),
        _ch(-0.17, 0.50, 0.08, 0.07, 0.0, 0.02, "atrium"),
        _ch(0.08, 0.47, 0.12, 0.065, -20.0, 0.025, "rv"),
        _ch(-0.13, 0.72, 0.08, 0.075, 0.0, 0.02, "atrium"),
        _ch(0.15, 0.68, 0.13, 0.08, -20.0, 0.035, "lv"),
    ),
    "SSN": (
        _Shape("arc", 0.0, 0.60, 0.27, 0.22, 0.0, _BLOOD, extra=(170.0, 370.0, 0.075, 0.045)),
        _Shape("seg", -0.10, 0.41, -0.14, 0.17, extra=(0.03, 0.02)),  # arch branches
        _Shape("seg", 0.0, 0.39, 0.0, 0.15, extra=(0.03, 0.02)),
        _Shape("seg", 0.10, 0.41, 0.14, 0.17, extra=(0.03, 0.02)),
        _ch(0.0, 0.68, 0.07, 0.06, 0.0, 0.02),  # right pulmonary artery
    ),
}
_VIEW_SHAPES["Apical_Doppler"] = _A4C
_VIEW_SHAPES["Doppler_Parasternal_Long"] = _VIEW_SHAPES["Parasternal_Long"]
_VIEW_SHAPES["Doppler_Parasternal_Short"] = _VIEW_SHAPES["Parasternal_Short"]

_BACKGROUND = {"SSN": 45.0, "Subcostal": 60.0}  # default tissue echogenicity: 70


@dataclass(frozen=True)
class _ColourBox:
    """Colour-flow box (annular sector r0..r1, theta0..theta1 rad) and two flow lobes.

    Lobes are (u, v, sigma): the first is red (towards the probe, diastolic), the
    second blue (away, systolic).
    """

    r0: float
    r1: float
    t0: float
    t1: float
    red: tuple[float, float, float]
    blue: tuple[float, float, float]


_COLOUR_BOX = {
    "Apical_Doppler": _ColourBox(0.40, 0.88, 0.0, 0.36, (0.12, 0.50, 0.09), (0.14, 0.76, 0.07)),
    "Doppler_Parasternal_Long": _ColourBox(0.36, 0.82, 0.12, 0.52, (0.24, 0.70, 0.08), (0.24, 0.45, 0.08)),
    "Doppler_Parasternal_Short": _ColourBox(0.22, 0.58, -0.60, -0.05, (-0.02, 0.36, 0.08), (-0.17, 0.31, 0.08)),
}


def _contraction(phase: np.ndarray) -> np.ndarray:
    """Systolic contraction 0..1 over the cardiac cycle (phase 0 = R wave)."""
    return np.where(phase < 0.5, np.sin(np.pi * phase / 0.5) ** 2, 0.0)


def _ecg(phase: np.ndarray) -> np.ndarray:
    """Synthetic ECG (arbitrary units, R peak ~1) at cardiac ``phase`` in [0, 1)."""
    out = np.zeros_like(phase, dtype=np.float64)
    for centre, amp, sigma in (
        (-0.12, 0.15, 0.025),  # P
        (-0.012, -0.12, 0.006),  # Q
        (0.0, 1.0, 0.008),  # R
        (0.014, -0.25, 0.006),  # S
        (0.28, 0.30, 0.04),  # T
    ):
        d = (phase - centre + 0.5) % 1.0 - 0.5
        out += amp * np.exp(-0.5 * (d / sigma) ** 2)
    return out


# Rayleigh inverse CDF on 256 quantiles, normalised to mean 1 (speckle amplitude).
_RAYLEIGH_LUT = (np.sqrt(-2.0 * np.log(1.0 - (np.arange(256) + 0.5) / 256.0)) / math.sqrt(math.pi / 2.0)).astype(
    np.float32
)

_SHIFT = 4  # cv2 sub-pixel bits
_ONE = 1 << _SHIFT


def _jitter_shapes(
    rng: np.random.Generator, shapes: tuple[_Shape, ...]
) -> tuple[list[_Shape], tuple[float, float, float, float]]:
    """Random per-cine placement: global shift/scale/rotation plus small per-shape jitter.

    Returns the jittered shapes and the global transform (du, dv, scale, rot_deg).
    """
    du, dv = rng.uniform(-0.035, 0.035, size=2)
    scale = rng.uniform(0.93, 1.07)
    rot = rng.uniform(-5.0, 5.0)
    c, s = math.cos(math.radians(rot)), math.sin(math.radians(rot))
    pivot_v = 0.55

    def move(u: float, v: float, lu: float, lv: float) -> tuple[float, float]:
        uu, vv = u * scale, (v - pivot_v) * scale
        # image coordinates (v down): positive rot turns clockwise on screen like cv2
        return uu * c - vv * s + du + lu, uu * s + vv * c + pivot_v + dv + lv

    out = []
    for sh in shapes:
        lu, lv = rng.uniform(-0.015, 0.015, size=2)
        size = scale * rng.uniform(0.97, 1.03)
        gain = rng.uniform(0.85, 1.15)
        if sh.kind == "band":
            out.append(_Shape("band", 0.0, max(0.0, sh.v + dv + lv), sh.a + dv + lv, value=sh.value * gain))
            continue
        u, v = move(sh.u, sh.v, lu, lv)
        if sh.kind == "seg":
            u2, v2 = move(sh.a, sh.b, lu, lv)
            a, b = u2, v2
        else:
            a, b = sh.a * size, sh.b * size
        extra = sh.extra
        if sh.kind in ("arc", "seg"):
            extra = (*extra[:-2], extra[-2] * size, extra[-1] * size)
        out.append(
            _Shape(
                sh.kind,
                u,
                v,
                a,
                b,
                sh.angle + rot,
                sh.value if sh.value == _BLOOD else sh.value * gain,
                sh.wall * size,
                sh.wall_value * gain,
                sh.role,
                extra,
            )
        )
    return out, (du, dv, scale, rot)


def _draw_shapes(
    img: np.ndarray,
    geom: _Geometry,
    shapes: list[_Shape],
    *,
    lv_factor: float,
    rv_factor: float,
    atrium_factor: float,
    thicken: float,
    background: float,
) -> None:
    """Draw ``shapes`` into the uint8 echogenicity crop ``img`` (h, w) in place."""
    R = geom.radius

    def pt(u: float, v: float) -> tuple[int, int]:
        x, y = geom.to_crop(u, v)
        return round(x * _ONE), round(y * _ONE)

    def ax(a: float, b: float) -> tuple[int, int]:
        return max(1, round(a * R * _ONE)), max(1, round(b * R * _ONE))

    for sh in shapes:
        if sh.kind == "band":
            centre = pt(0.0, 0.0)
            cv2.circle(img, centre, round(sh.a * R * _ONE), sh.value, -1, cv2.LINE_8, _SHIFT)
            cv2.circle(img, centre, round(sh.v * R * _ONE), background, -1, cv2.LINE_8, _SHIFT)
        elif sh.kind == "seg":
            thick, wall = sh.extra
            p0, p1 = pt(sh.u, sh.v), pt(sh.a, sh.b)
            if wall > 0:
                cv2.line(img, p0, p1, sh.wall_value, max(1, round((thick + 2 * wall) * R)), cv2.LINE_8, _SHIFT)
            cv2.line(img, p0, p1, sh.value, max(1, round(thick * R)), cv2.LINE_8, _SHIFT)
        elif sh.kind == "arc":
            start, end, thick, wall = sh.extra
            c, axes = pt(sh.u, sh.v), ax(sh.a, sh.b)
            if wall > 0:
                cv2.ellipse(
                    img,
                    c,
                    axes,
                    sh.angle,
                    start,
                    end,
                    sh.wall_value,
                    max(1, round((thick + 2 * wall) * R)),
                    cv2.LINE_8,
                    _SHIFT,
                )
            cv2.ellipse(img, c, axes, sh.angle, start, end, sh.value, max(1, round(thick * R)), cv2.LINE_8, _SHIFT)
        else:
            f = {"lv": lv_factor, "rv": rv_factor, "atrium": atrium_factor}.get(sh.role, 1.0)
            c = pt(sh.u, sh.v)
            if sh.kind == "chamber" and sh.wall > 0:
                wall = sh.wall * (thicken if sh.role == "lv" else 1.0)
                cv2.ellipse(
                    img,
                    c,
                    ax(sh.a * f + wall, sh.b * f + wall),
                    sh.angle,
                    0,
                    360,
                    sh.wall_value,
                    -1,
                    cv2.LINE_8,
                    _SHIFT,
                )
            cv2.ellipse(img, c, ax(sh.a * f, sh.b * f), sh.angle, 0, 360, sh.value, -1, cv2.LINE_8, _SHIFT)


def _render_sector(
    rng: np.random.Generator,
    geom: _Geometry,
    view: str,
    *,
    phases: np.ndarray,
    lv_scale: float,
    wall_motion: float,
    colour: bool = True,
) -> np.ndarray:
    """Render the fan crop for each cardiac phase: RGB uint8 (n, h, w, 3) of the box.

    ``phases`` (n,) are cardiac phases in [0, 1) (0 = R wave).
    """
    if view not in _VIEW_SHAPES:
        raise ValueError(f"unknown view {view!r}; expected one of {VIEWS}")
    n = len(phases)
    h, w = geom.crop_shape
    r, theta, fan = _polar(geom)
    shapes, (du, dv, _, _) = _jitter_shapes(rng, _VIEW_SHAPES[view])
    background = _BACKGROUND.get(view, 70.0) * rng.uniform(0.85, 1.15)
    gain = rng.uniform(0.75, 1.25)

    contraction = _contraction(np.asarray(phases, dtype=np.float64))
    echo = np.empty((n, h, w), dtype=np.uint8)
    sigma = max(0.6, h / 220.0)
    for i in range(n):
        c = float(contraction[i])
        frame = echo[i]
        frame.fill(round(background))
        _draw_shapes(
            frame,
            geom,
            shapes,
            lv_factor=lv_scale * (1.0 - wall_motion * c),
            rv_factor=1.0 - 0.12 * c,
            atrium_factor=1.0 + 0.06 * c,
            thicken=1.0 + 1.5 * wall_motion * c,
            background=background,
        )
        cv2.GaussianBlur(frame, (0, 0), sigma, dst=frame)

    # Rayleigh speckle at half resolution, bilinearly upsampled (= slightly smoothed).
    h2, w2 = (h + 1) // 2, (w + 1) // 2
    codes = rng.integers(0, 256, size=(n, h2, w2), dtype=np.uint8)
    low = _RAYLEIGH_LUT[codes]
    speckle = np.empty((n, h, w), dtype=np.float32)
    for i in range(n):
        cv2.resize(low[i], (w, h), dst=speckle[i], interpolation=cv2.INTER_LINEAR)

    # Gain profile: per-cine gain, depth attenuation, darker fan edges, near-field haze.
    edge = 1.0 - 0.35 * (np.abs(theta) / geom.half_angle) ** 6
    profile = gain * (1.08 - 0.35 * r) * edge
    profile = np.where(fan, profile, 0.0).astype(np.float32)
    haze = np.where(fan, 35.0 * gain * np.exp(-r / 0.05), 0.0).astype(np.float32)

    grey = echo.astype(np.float32)
    grey *= speckle
    grey *= profile
    grey += haze
    np.clip(grey, 0.0, 255.0, out=grey)
    rgb = np.empty((n, h, w, 3), dtype=np.uint8)
    rgb[...] = grey.astype(np.uint8)[..., None]

    box = _COLOUR_BOX.get(view) if colour else None
    if box is not None:
        _add_colour_flow(rng, geom, rgb, echo, speckle, box, contraction, du, dv)
    return rgb


def _add_colour_flow(
    rng: np.random.Generator,
    geom: _Geometry,
    rgb: np.ndarray,
    echo: np.ndarray,
    speckle: np.ndarray,
    box: _ColourBox,
    contraction: np.ndarray,
    du: float,
    dv: float,
) -> None:
    """Paint red/blue colour flow over blood inside the colour box (in place).

    rgb (n, h, w, 3) uint8; echo (n, h, w) uint8 echogenicity; speckle (n, h, w) float32.
    """
    r, theta, fan = _polar(geom)
    jr, jt = rng.uniform(-0.03, 0.03, size=2)
    inbox = fan & (r >= box.r0 + jr + dv) & (r <= box.r1 + jr + dv) & (theta >= box.t0 + jt) & (theta <= box.t1 + jt)
    rows = np.flatnonzero(inbox.any(axis=1))
    cols = np.flatnonzero(inbox.any(axis=0))
    if rows.size == 0 or cols.size == 0:
        return
    ys = slice(rows[0], rows[-1] + 1)
    xs = slice(cols[0], cols[-1] + 1)
    sub_box = inbox[ys, xs]
    R = geom.radius
    yy, xx = np.mgrid[ys, xs].astype(np.float32)

    def lobe(spec: tuple[float, float, float]) -> np.ndarray:
        x, y = geom.to_crop(spec[0] + du, spec[1] + dv)
        s = spec[2] * R
        return np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * s * s)).astype(np.float32)

    red, blue = lobe(box.red), lobe(box.blue)
    diastole = 1.0 - contraction
    a_red = (0.45 + 0.8 * diastole).astype(np.float32)
    a_blue = (0.45 + 0.8 * contraction).astype(np.float32)
    vel = a_red[:, None, None] * red - a_blue[:, None, None] * blue
    vel *= 0.55 + 0.45 * speckle[:, ys, xs]
    mask = sub_box & (echo[:, ys, xs] < _BLOOD_MAX) & (np.abs(vel) > 0.12)
    mag = np.clip(np.abs(vel), 0.0, 1.0)
    main = (80.0 + 175.0 * mag**0.7).astype(np.uint8)
    alias = (np.clip((mag - 0.7) * 3.0, 0.0, 1.0) * 230.0).astype(np.uint8)
    zero = np.zeros_like(main)
    pos = vel > 0
    colour = np.stack([np.where(pos, main, zero), alias, np.where(pos, zero, main)], axis=-1)
    sub = rgb[:, ys, xs]
    sub[mask] = colour[mask]
    # thin outline of the colour box (grey), as drawn by the scanner
    outline = sub_box ^ cv2.erode(sub_box.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    sub[:, outline] = 150


# --------------------------------------------------------------------------- overlays


def _font_scale(height: int) -> float:
    return max(0.25, height / 560.0)


def _text(
    img: np.ndarray, text: str, org: tuple[int, int], scale: float, colour: tuple[int, int, int] = (255, 255, 255)
) -> None:
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def _text_width(text: str, scale: float) -> tuple[int, int, int]:
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    return tw, th, base


def _ecg_trace(
    img: np.ndarray,
    band: tuple[int, int, int, int],
    *,
    hr_bpm: float,
    t_start: float,
    sweep_s: float,
    phase0: float,
) -> None:
    """Draw a green ECG polyline into ``band`` (x0, y0, x1, y1) of ``img`` in place."""
    bx0, by0, bx1, by1 = band
    if by1 - by0 < 3 or bx1 - bx0 < 8:
        return
    xs = np.arange(bx0, bx1 + 1)
    sweep_index = math.floor(t_start / sweep_s)
    t = sweep_index * sweep_s + (xs - bx0) / (bx1 - bx0) * sweep_s
    phase = (t * hr_bpm / 60.0 + phase0) % 1.0
    base_y = by0 + 0.72 * (by1 - by0)
    ys = base_y - _ecg(phase) * 0.65 * (by1 - by0)
    pts = np.stack([xs * _ONE, np.round(ys * _ONE)], axis=1).astype(np.int32)
    cv2.polylines(img, [pts], False, (0, 220, 0), 1, cv2.LINE_AA, _SHIFT)


def _ecg_cursor_x(band: tuple[int, int, int, int], t: np.ndarray, sweep_s: float) -> np.ndarray:
    bx0, _, bx1, _ = band
    return np.round(bx0 + (t % sweep_s) / sweep_s * (bx1 - bx0)).astype(int)


def _colour_bar(img: np.ndarray, x0: int, y0: int, width: int, height: int) -> None:
    """Vertical red (top) / blue (bottom) velocity colour bar, in place."""
    if width < 2 or height < 8:
        return
    s = np.linspace(1.0, -1.0, height)[:, None]
    mag = np.abs(s)
    main = 80 + 175 * mag**0.7
    alias = np.clip((mag - 0.7) * 3.0, 0.0, 1.0) * 230
    bar = np.stack([np.where(s > 0, main, 0), alias, np.where(s > 0, 0, main)], axis=-1)
    bar[height // 2] = 200  # baseline
    img[y0 : y0 + height, x0 : x0 + width] = np.repeat(bar, width, axis=1).astype(np.uint8)


def _static_overlay(
    geom: _Geometry,
    *,
    view: str,
    hr_bpm: float,
    frame_time_ms: float,
    gain_db: int,
    band: tuple[int, int, int, int],
    ecg_kw: dict[str, float],
) -> np.ndarray:
    """Text, depth scale, colour bar and ECG for one cine: RGB uint8 (H, W, 3).

    Pixels inside the sector box are guaranteed to be 0.
    """
    H, W = geom.height, geom.width
    x0, y0, x1, y1 = geom.box
    img = np.zeros((H, W, 3), dtype=np.uint8)
    fs = _font_scale(H)
    _, th, base = _text_width("Ag", fs)
    top = max(th + 1, y0 - base - 2)
    _text(img, "GE Vivid E95", (2, top), fs)
    label = f"{1000.0 / frame_time_ms:.0f}Hz HR {hr_bpm:.0f}bpm"
    tw, _, _ = _text_width(label, fs)
    _text(img, label, (W - tw - 2, top), fs)

    # left margin: colour bar for Doppler views, then acquisition labels
    y = y0 + 2
    if view in _COLOUR_BOX:
        bar_h = max(8, round(0.22 * H))
        _colour_bar(img, 3, y, max(2, round(0.02 * W)), bar_h)
        _text(img, "64", (3 + max(2, round(0.02 * W)) + 2, y + th), fs * 0.8)
        y += bar_h + 4
    for line in ("2D", f"Gn {gain_db}", "DR 60", "ECHO"):
        y += th + 4
        _text(img, line, (2, y), fs * 0.85)

    # depth scale on the right side of the sector: a tick per cm, labels every 5 cm
    xt = x1 + 3
    if xt + 3 < W:
        n_cm = int(_DEPTH_CM)
        for cm in range(n_cm + 1):
            yy = round(geom.apex_y + cm / _DEPTH_CM * geom.radius)
            if yy > y1:
                break
            length = 4 if cm % 5 == 0 else 2
            cv2.line(img, (xt, yy), (xt + length, yy), (255, 255, 255), 1)
            if cm % 5 == 0 and cm > 0:
                _text(img, str(cm), (xt + 6, yy + th // 2), fs * 0.8)

    _ecg_trace(img, band, hr_bpm=hr_bpm, **ecg_kw)
    img[y0 : y1 + 1, x0 : x1 + 1] = 0
    return img


def _ecg_band(height: int, width: int, top: int) -> tuple[int, int, int, int]:
    return round(0.04 * width), top + 3, round(0.96 * width), height - 2


# --------------------------------------------------------------------------- public API


def synth_cine(
    rng: np.random.Generator,
    *,
    view: str,
    n_frames: int,
    height: int,
    width: int,
    lv_scale: float,
    wall_motion: float,
    hr_bpm: float,
    frame_time_ms: float,
) -> np.ndarray:
    """Render a synthetic GE Vivid echocardiogram cine of one ``view``.

    Black screen with a 75 degree speckle fan (apex at top centre, inside
    :func:`sector_region`), dark blood-pool chambers laid out per view, colour flow in the
    Doppler views, and burned-in overlays outside the sector box: text (top), depth
    ticks (right), colour bar (left, Doppler views), green ECG with a moving cursor
    (bottom).  The LV cavity (where present) has size proportional to ``lv_scale`` and
    contracts with relative amplitude ``wall_motion`` at ``hr_bpm`` (frames
    ``frame_time_ms`` apart).  Deterministic for the state of ``rng``.

    Returns:
        RGB uint8 array of shape (n_frames, height, width, 3).
    """
    if n_frames < 1:
        raise ValueError("n_frames must be >= 1")
    if hr_bpm <= 0 or frame_time_ms <= 0 or lv_scale <= 0:
        raise ValueError("hr_bpm, frame_time_ms and lv_scale must be positive")
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; expected one of {VIEWS}")
    geom = _screen_geometry(height, width)
    x0, y0, x1, y1 = geom.box
    sweep_s = 2.0
    phase0 = rng.uniform(0.0, 1.0)
    t_start = rng.uniform(0.0, sweep_s)
    times = t_start + np.arange(n_frames) * (frame_time_ms / 1000.0)
    phases = (times * hr_bpm / 60.0 + phase0) % 1.0

    crop = _render_sector(rng, geom, view, phases=phases, lv_scale=lv_scale, wall_motion=wall_motion)
    band = _ecg_band(height, width, y1)
    overlay = _static_overlay(
        geom,
        view=view,
        hr_bpm=hr_bpm,
        frame_time_ms=frame_time_ms,
        gain_db=int(rng.integers(4, 20)),
        band=band,
        ecg_kw={"t_start": t_start, "sweep_s": sweep_s, "phase0": phase0},
    )
    out = np.empty((n_frames, height, width, 3), dtype=np.uint8)
    out[:] = overlay
    out[:, y0 : y1 + 1, x0 : x1 + 1] = crop
    if band[3] - band[1] >= 3:
        for i, cx in enumerate(_ecg_cursor_x(band, times, sweep_s)):
            out[i, band[1] : band[3] + 1, cx] = (255, 255, 0)
    return out


def synth_doppler_still(rng: np.random.Generator, *, height: int, width: int) -> np.ndarray:
    """Render a spectral (pulsed-wave) Doppler still as a GE Vivid screen.

    A small 2-D sector at the top (with the sample-volume line), a dark spectral strip
    (:func:`spectral_region`) with a baseline, a bright velocity envelope (E/A inflow
    above, systolic outflow below the baseline) and a velocity scale in cm/s on its
    right, and a green ECG trace underneath.

    Returns:
        RGB uint8 array of shape (height, width, 3).
    """
    img = np.zeros((height, width, 3), dtype=np.uint8)
    hr = rng.uniform(55.0, 105.0)
    phase0 = rng.uniform(0.0, 1.0)

    # 2-D reference image
    geom = _still_geometry(height, width)
    sx0, sy0, sx1, sy1 = geom.box
    view = str(rng.choice(["A4C", "A5C"]))
    crop = _render_sector(rng, geom, view, phases=np.array([0.6]), lv_scale=1.0, wall_motion=0.2, colour=False)[0]
    ang = rng.uniform(-0.15, 0.15)
    gate = rng.uniform(0.6, 0.8)
    for k in range(0, 20, 2):  # dashed sample-volume line
        p0 = geom.to_crop(math.sin(ang) * k / 20, math.cos(ang) * k / 20)
        p1 = geom.to_crop(math.sin(ang) * (k + 1) / 20, math.cos(ang) * (k + 1) / 20)
        cv2.line(crop, (round(p0[0]), round(p0[1])), (round(p1[0]), round(p1[1])), (230, 230, 230), 1)
    g = geom.to_crop(math.sin(ang) * gate, math.cos(ang) * gate)
    for dy in (-2, 2):
        cv2.line(crop, (round(g[0]) - 3, round(g[1]) + dy), (round(g[0]) + 3, round(g[1]) + dy), (255, 255, 255), 1)
    img[sy0 : sy1 + 1, sx0 : sx1 + 1] = crop

    # spectral strip: columns are time, rows velocity
    x0, y0, x1, y1 = spectral_region(height, width)
    sh, sw = y1 - y0 + 1, x1 - x0 + 1
    sweep_s = rng.uniform(2.5, 4.0)
    t = np.arange(sw) / sw * sweep_s
    phase = (t * hr / 60.0 + phase0) % 1.0
    e_amp, a_amp = rng.uniform(0.55, 0.85), rng.uniform(0.3, 0.65)
    s_amp = rng.uniform(0.2, 0.45)

    def bump(centre: float, width_: float) -> np.ndarray:
        d = (phase - centre + 0.5) % 1.0 - 0.5
        return np.clip(1.0 - (d / width_) ** 2, 0.0, None)

    # envelope velocity in units of _SPECTRAL_FULL_CM_S (+ towards the probe)
    env = e_amp * bump(0.55, 0.09) + a_amp * bump(0.86, 0.06) - s_amp * bump(0.2, 0.12)
    base_row = _spectral_baseline(sh)
    rows = np.arange(sh, dtype=np.float32)[:, None]
    span = (env * base_row)[None, :]  # signed pixel distance baseline -> envelope
    frac = np.divide(base_row - rows, span, out=np.full((sh, sw), -1.0), where=span != 0)
    inside = (frac >= 0.0) & (frac <= 1.0)
    noise = rng.rayleigh(1.0, size=(sh, sw)).astype(np.float32)
    level = np.where(inside, 60.0 + 170.0 * np.clip(frac, 0.0, 1.0) ** 1.5, 10.0) * (0.6 + 0.3 * noise)
    strip = np.clip(level, 0, 255).astype(np.uint8)
    strip[base_row] = 170  # baseline
    img[y0 : y1 + 1, x0 : x1 + 1] = strip[..., None]

    # velocity scale (right of the strip), text, ECG
    fs = _font_scale(height)
    _, th, base = _text_width("Ag", fs)
    xt = x1 + 3
    for cm_s in (50, -50):
        yy = round(y0 + base_row - cm_s / _SPECTRAL_FULL_CM_S * base_row)
        if y0 <= yy <= y1:
            cv2.line(img, (xt, yy), (xt + 3, yy), (255, 255, 255), 1)
            _text(img, str(cm_s), (xt + 5, yy + th // 2), fs * 0.8)
    _text(img, "cm/s", (xt, min(height - 1, y0 - 2)), fs * 0.8)
    _text(img, "GE Vivid E95", (2, max(th + 1, sy0 - base - 2)), fs)
    label = f"PW HR {hr:.0f}bpm"
    tw, _, _ = _text_width(label, fs)
    _text(img, label, (width - tw - 2, max(th + 1, sy0 - base - 2)), fs)
    band = _ecg_band(height, width, y1)
    _ecg_trace(img, (x0, band[1], x1, band[3]), hr_bpm=hr, t_start=0.0, sweep_s=sweep_s, phase0=phase0)
    return img


# --------------------------------------------------------------------------- DICOM


def _encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """JPEG Baseline (JFIF, YCbCr 4:2:2) bytes of one RGB uint8 (h, w, 3) image."""
    buf = BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb), mode="RGB").save(buf, format="JPEG", quality=quality, subsampling=1)
    return buf.getvalue()


def _uid(*parts: object) -> str:
    return generate_uid(entropy_srcs=[_UID_ROOT, *map(str, parts)])


def _base_dataset(
    *,
    sop_class: str,
    subject_id: int,
    study_id: int,
    instance_number: int,
    acquisition_datetime: datetime,
    rows: int,
    columns: int,
) -> Dataset:
    sop_instance = _uid("instance", study_id, instance_number)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "HFTRI_DEMO"

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    date = acquisition_datetime.strftime("%Y%m%d")
    time = acquisition_datetime.strftime("%H%M%S")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = time
    ds.AcquisitionDateTime = acquisition_datetime.strftime("%Y%m%d%H%M%S.%f")
    ds.AccessionNumber = str(study_id)
    ds.Modality = "US"
    ds.Manufacturer = "GE Healthcare"
    ds.ReferringPhysicianName = ""
    ds.StationName = "VIVIDE95"
    ds.StudyDescription = "Echocardiogram"
    ds.ManufacturerModelName = "Vivid E95"
    ds.PatientName = f"DEMO^{subject_id}"
    ds.PatientID = str(subject_id)
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = _uid("study", study_id)
    ds.SeriesInstanceUID = _uid("series", study_id)
    ds.StudyID = str(study_id)
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "YES"
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    return ds


def _region(
    box: tuple[int, int, int, int],
    *,
    spatial_format: int,
    data_type: int,
    units_x: int,
    units_y: int,
    delta_x: float,
    delta_y: float,
    ref_x: int,
    ref_y: int,
) -> Dataset:
    x0, y0, x1, y1 = box
    item = Dataset()
    item.RegionSpatialFormat = spatial_format
    item.RegionDataType = data_type
    item.RegionFlags = 2
    item.RegionLocationMinX0 = x0
    item.RegionLocationMinY0 = y0
    item.RegionLocationMaxX1 = x1
    item.RegionLocationMaxY1 = y1
    item.PhysicalUnitsXDirection = units_x
    item.PhysicalUnitsYDirection = units_y
    item.PhysicalDeltaX = float(delta_x)
    item.PhysicalDeltaY = float(delta_y)
    item.ReferencePixelX0 = ref_x
    item.ReferencePixelY0 = ref_y
    item.ReferencePixelPhysicalValueX = 0.0
    item.ReferencePixelPhysicalValueY = 0.0
    return item


def _sector_region_item(geom: _Geometry) -> Dataset:
    delta = _DEPTH_CM / geom.radius
    x0, y0 = geom.box[0], geom.box[1]
    return _region(
        geom.box,
        spatial_format=1,
        data_type=1,
        units_x=3,
        units_y=3,
        delta_x=delta,
        delta_y=delta,
        ref_x=round(geom.cx - x0),
        ref_y=round(geom.apex_y - y0),
    )


def _check_rgb(arr: np.ndarray, ndim: int) -> None:
    if arr.dtype != np.uint8 or arr.ndim != ndim or arr.shape[-1] != 3:
        shape = "(n, H, W, 3)" if ndim == 4 else "(H, W, 3)"
        raise ValueError(f"expected RGB uint8 {shape}, got {arr.dtype} {arr.shape}")


# How a demo DICOM's pixels are stored (records.DICOM_ENCODINGS draws one per file): GE's JPEG Baseline YBR_FULL_422,
# or one of the other kinds a real archive holds (RLE, uncompressed, JPEG 2000, and for stills PALETTE COLOR).
ENCODINGS = ("jpeg_baseline", "rle", "native", "jpeg2000", "palette")


def _set_pixels(ds: Dataset, frames_rgb: np.ndarray, encoding: str, quality: int) -> None:
    """PixelData of (n, H, W, 3) RGB uint8 frames in ``encoding`` (transfer syntax, photometric interpretation and
    the lossy-compression attributes set to match)."""
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    if encoding == "jpeg_baseline":
        ds.PixelData = encapsulate([_encode_jpeg(f, quality) for f in frames_rgb])
        ds["PixelData"].is_undefined_length = True
        return
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.LossyImageCompression = "00"
    del ds.LossyImageCompressionMethod
    if encoding == "palette":
        _set_palette(ds, frames_rgb)
        return
    ds.PhotometricInterpretation = "RGB"
    ds.PixelData = np.ascontiguousarray(frames_rgb).tobytes()
    if encoding == "rle":
        ds.compress(RLELossless)
    elif encoding == "jpeg2000":
        logging.getLogger("openjpeg").setLevel(logging.WARNING)  # it logs an INFO line per encoded tile
        ds.compress(JPEG2000Lossless)  # pylibjpeg-openjpeg, lossless: decodes back to these RGB values exactly


def _set_palette(ds: Dataset, frames_rgb: np.ndarray) -> None:
    """8-bit PALETTE COLOR: the first frame's 256-colour median-cut palette (Pillow) as 16-bit lookup tables, every
    frame mapped onto it (uncompressed)."""
    palette_image = Image.fromarray(frames_rgb[0]).quantize(256, method=Image.Quantize.MEDIANCUT)
    indices = np.stack([np.asarray(Image.fromarray(f).quantize(palette=palette_image)) for f in frames_rgb])
    lut = np.zeros((256, 3), np.uint16)
    colours = np.asarray(palette_image.getpalette()[: 3 * 256], dtype=np.uint16).reshape(-1, 3)
    lut[: len(colours)] = colours * 257  # 8 -> 16 bits
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "PALETTE COLOR"
    del ds.PlanarConfiguration
    for channel, name in enumerate(("Red", "Green", "Blue")):
        setattr(ds, f"{name}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{name}PaletteColorLookupTableData", lut[:, channel].astype("<u2").tobytes())
    ds.PixelData = indices.astype(np.uint8).tobytes()


def _save(ds: Dataset, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def write_us_multiframe(
    path: Path,
    frames_rgb: np.ndarray,
    *,
    subject_id: int,
    study_id: int,
    acquisition_datetime: datetime,
    frame_time_ms: float,
    instance_number: int,
    with_regions: bool = True,
    quality: int = 90,
    encoding: str = "jpeg_baseline",
) -> None:
    """Write an Ultrasound Multi-frame Image Storage DICOM, JPEG Baseline, YBR_FULL_422 (or ``encoding``: RLE,
    uncompressed or JPEG 2000 lossless RGB, or PALETTE COLOR).

    Args:
        path: output file; parent directories are created.
        frames_rgb: RGB uint8 (n_frames, H, W, 3); each frame is JPEG encoded (JFIF,
            YCbCr 4:2:2 at ``quality``) and the frames are encapsulated with a basic
            offset table.
        subject_id, study_id, instance_number: identifiers; the Study/Series/SOP
            Instance UIDs are derived deterministically from them.
        frame_time_ms: FrameTime (0018,1063), referenced by FrameIncrementPointer.
        with_regions: add a SequenceOfUltrasoundRegions item for the 2-D sector
            (:func:`sector_region` of H, W; cm units).
    """
    _check_rgb(frames_rgb, 4)
    if frame_time_ms <= 0:
        raise ValueError("frame_time_ms must be positive")
    n, rows, cols, _ = frames_rgb.shape
    ds = _base_dataset(
        sop_class=UltrasoundMultiFrameImageStorage,
        subject_id=subject_id,
        study_id=study_id,
        instance_number=instance_number,
        acquisition_datetime=acquisition_datetime,
        rows=rows,
        columns=cols,
    )
    ds.NumberOfFrames = n
    ds.FrameTime = DSfloat(frame_time_ms, auto_format=True)
    ds.FrameIncrementPointer = Tag(0x0018, 0x1063)
    ds.CineRate = max(1, round(1000.0 / frame_time_ms))
    ds.RecommendedDisplayFrameRate = ds.CineRate
    ds.StartTrim = 1
    ds.StopTrim = n
    if with_regions:
        ds.SequenceOfUltrasoundRegions = Sequence([_sector_region_item(_screen_geometry(rows, cols))])
    _set_pixels(ds, frames_rgb, encoding, quality)
    _save(ds, path)


def write_us_still(
    path: Path,
    image_rgb: np.ndarray,
    *,
    subject_id: int,
    study_id: int,
    acquisition_datetime: datetime,
    instance_number: int,
    quality: int = 90,
    encoding: str = "jpeg_baseline",
) -> None:
    """Write a single-frame Ultrasound Image Storage DICOM, JPEG Baseline, YBR_FULL_422 (or ``encoding``, as
    :func:`write_us_multiframe`).

    Args:
        path: output file; parent directories are created.
        image_rgb: RGB uint8 (H, W, 3), laid out like :func:`synth_doppler_still`.
        subject_id, study_id, instance_number: identifiers (UIDs derived from them).

    SequenceOfUltrasoundRegions holds two items: the small 2-D sector (spatial format 1,
    data type 1, cm) and the spectral strip (:func:`spectral_region`; spatial format 3,
    data type 3, seconds x cm/s, reference row = baseline).
    """
    _check_rgb(image_rgb, 3)
    rows, cols, _ = image_rgb.shape
    ds = _base_dataset(
        sop_class=UltrasoundImageStorage,
        subject_id=subject_id,
        study_id=study_id,
        instance_number=instance_number,
        acquisition_datetime=acquisition_datetime,
        rows=rows,
        columns=cols,
    )
    sx0, sy0, sx1, sy1 = spectral_region(rows, cols)
    base_row = _spectral_baseline(sy1 - sy0 + 1)
    spectral = _region(
        (sx0, sy0, sx1, sy1),
        spatial_format=3,
        data_type=3,
        units_x=4,
        units_y=7,
        delta_x=3.0 / (sx1 - sx0 + 1),
        delta_y=_SPECTRAL_FULL_CM_S / max(base_row, 1),
        ref_x=0,
        ref_y=base_row,
    )
    ds.SequenceOfUltrasoundRegions = Sequence([_sector_region_item(_still_geometry(rows, cols)), spectral])
    _set_pixels(ds, image_rgb[None], encoding, quality)
    _save(ds, path)
