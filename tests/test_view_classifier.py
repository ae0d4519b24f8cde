"""The echo view classifier: EchoPrime's checkpoint layout, strict loading, preprocessing, demo training."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from reference_data import checkpoint_keys

from hftri_mimic.echo.view_classifier import (
    VIEWS,
    ViewClassifierConfig,
    build_view_classifier,
    load_view_classifier,
    predict_views,
    preprocess_frames,
    save_view_classifier,
    train_view_classifier,
)

BASE = ViewClassifierConfig(variant="convnext_base", input_size=64)  # 64 px keeps convnext_base fast on the CPU
MINI = ViewClassifierConfig(variant="convnext_mini", input_size=64)


def _random_frames(n: int, seed: int = 0, height: int = 64, width: int = 80) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, height, width, 3), dtype=np.uint8)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: on a shared 2-core runner OpenMP spinning makes 2 threads many times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _lightning_ckpt(state: dict[str, torch.Tensor]) -> dict:
    """A Lightning-style checkpoint as EchoPrime's view_classifier.ckpt: the ConvNeXt held as ``self.model``."""
    return {
        "epoch": 3,
        "global_step": 1200,
        "pytorch-lightning_version": "1.9.0",
        "state_dict": {f"model.{k}": v for k, v in state.items()},
        "hyper_parameters": {"lr": 1e-4, "num_classes": 11},
    }


@pytest.fixture(scope="module")
def echoprime_files(tmp_path_factory) -> tuple[dict[str, torch.Tensor], Path, Path]:
    """A random convnext_base view classifier saved as EchoPrime's .pt (plain state dict) and .ckpt (Lightning)."""
    torch.manual_seed(0)
    model = torchvision.models.convnext_base(weights=None)
    model.classifier[-1] = torch.nn.Linear(model.classifier[-1].in_features, 11)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    folder = tmp_path_factory.mktemp("echoprime")
    torch.save(state, folder / "view_classifier.pt")
    torch.save(_lightning_ckpt(state), folder / "view_classifier.ckpt")
    return state, folder / "view_classifier.pt", folder / "view_classifier.ckpt"


def test_views_are_echoprimes_order_everywhere() -> None:
    from hftri_mimic.demo.echo import VIEWS as DEMO_VIEWS

    assert len(VIEWS) == 11 and VIEWS[0] == "A2C" and VIEWS[-1] == "Subcostal"
    assert VIEWS == DEMO_VIEWS, "the demo's ground-truth views are not in the classifier's output order"
    echo = pytest.importorskip("hftri_mimic.echo.dicom")  # written separately; the lead unifies the two definitions
    if hasattr(echo, "VIEWS"):
        assert tuple(echo.VIEWS) == VIEWS, "hftri_mimic.echo.dicom.VIEWS differs from the classifier's output order"


def test_built_convnext_base_has_exactly_echoprimes_keys_and_shapes() -> None:
    keys_tsv = checkpoint_keys("echoprime-view-classifier.tsv")
    rows = [line.split("\t") for line in keys_tsv.read_text().splitlines()[1:] if line.strip()]
    expected = {key: tuple(int(d) for d in shape.split("x")) for key, shape in rows}
    assert len(expected) == 344, f"{keys_tsv} should list 344 tensors"
    built = {k: tuple(v.shape) for k, v in build_view_classifier(BASE).state_dict().items()}
    assert sorted(set(built) - set(expected)) == [], "keys the EchoPrime checkpoint does not have"
    assert sorted(set(expected) - set(built)) == [], "EchoPrime keys the built model lacks"
    wrong = {k: (built[k], expected[k]) for k in expected if built[k] != expected[k]}
    assert wrong == {}, f"shapes differ from EchoPrime's (built, file): {wrong}"


def test_echoprime_pt_and_lightning_ckpt_load_strictly_and_predict_identically(echoprime_files) -> None:
    state, pt, ckpt = echoprime_files
    frames = _random_frames(3)
    probabilities = []
    for path in (pt, ckpt):
        model = load_view_classifier(path, BASE)
        assert not model.training, f"{path.name}: the loaded model is not in eval mode"
        loaded = model.state_dict()
        assert loaded.keys() == state.keys()
        assert all(torch.equal(loaded[k], state[k]) for k in state), f"{path.name}: tensors changed on loading"
        probabilities.append(predict_views(model, frames, BASE, batch_size=2))
    assert probabilities[0].shape == (3, 11) and probabilities[0].dtype == np.float32
    np.testing.assert_allclose(probabilities[0].sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probabilities[0], probabilities[1], "the .pt and the .ckpt predict differently")


def test_saved_classifier_round_trips(tmp_path) -> None:
    torch.manual_seed(1)
    model = build_view_classifier(MINI)
    save_view_classifier(model, tmp_path / "sub/view_classifier.pt")
    loaded = load_view_classifier(tmp_path / "sub/view_classifier.pt", MINI)
    frames = _random_frames(4, seed=1)
    np.testing.assert_array_equal(predict_views(model, frames, MINI), predict_views(loaded, frames, MINI))
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["view_classifier.pt"], "temporary file left"


@pytest.mark.parametrize("lightning", [False, True], ids=["pt", "ckpt"])
def test_renamed_and_extra_keys_are_named_in_the_error(tmp_path, lightning) -> None:
    state = build_view_classifier(MINI).state_dict()
    state["features.1.0.gamma"] = state.pop("features.1.0.layer_scale")  # a timm-style name
    state["extra_head.bias"] = torch.zeros(11)
    path = tmp_path / ("bad.ckpt" if lightning else "bad.pt")
    torch.save(_lightning_ckpt(state) if lightning else state, path)
    with pytest.raises(ValueError) as err:
        load_view_classifier(path, MINI)
    message = str(err.value)
    for needle in ("features.1.0.layer_scale", "features.1.0.gamma", "extra_head.bias", str(path), "convnext_mini"):
        assert needle in message, f"{needle!r} missing from the error: {message}"
    assert "1 missing keys" in message and "2 unexpected keys" in message, message


def test_convnext_tiny_file_loaded_as_base_explains_the_variant(tmp_path) -> None:
    tiny = build_view_classifier(ViewClassifierConfig(variant="convnext_tiny"))
    path = tmp_path / "view_classifier.pt"
    save_view_classifier(tiny, path)
    with pytest.raises(ValueError) as err:
        load_view_classifier(path, BASE)
    message = str(err.value)
    assert "features.0.0.weight (file (96, 3, 4, 4), model (128, 3, 4, 4))" in message, message
    assert "missing keys" in message and "features.5.9." in message, "base's extra stage-3 blocks not named"
    assert "looks like convnext_tiny with 11 classes" in message, message


def test_shape_only_mismatch_is_a_value_error_naming_the_key(tmp_path) -> None:
    path = tmp_path / "eleven_views.pt"
    save_view_classifier(build_view_classifier(MINI), path)
    five = ViewClassifierConfig(variant="convnext_mini", num_classes=5, input_size=64)
    with pytest.raises(ValueError, match=r"classifier\.2\.weight \(file \(11, 128\), model \(5, 128\)\)"):
        load_view_classifier(path, five)


def test_not_a_state_dict_is_refused(tmp_path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ValueError, match="neither a plain state dict"):
        load_view_classifier(path, MINI)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_view_classifier(tmp_path / "absent.pt", MINI)


def test_preprocess_constant_image_in_bgr_with_echoprime_statistics() -> None:
    frames = np.empty((2, 40, 50, 3), dtype=np.uint8)
    frames[:] = (200, 100, 30)  # R, G, B
    x = preprocess_frames(frames, ViewClassifierConfig(input_size=32))
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    expected_bgr = [(30 - 29.110628) / 47.989223, (100 - 28.076836) / 46.456997, (200 - 29.096405) / 47.20083]
    for channel, value in enumerate(expected_bgr):
        assert torch.allclose(x[:, channel], torch.tensor(value), atol=1e-6), f"channel {channel} is not BGR-normalised"


def test_preprocess_centre_crops_non_square_frames() -> None:
    frames = np.zeros((1, 40, 60, 3), dtype=np.uint8)
    frames[:, :, :10] = 255  # burned-in margins outside the centre 40 x 40 square
    frames[:, :, 50:] = 255
    x = preprocess_frames(frames, ViewClassifierConfig(input_size=40))
    assert torch.allclose(x[0, 0], torch.tensor(-29.110628 / 47.989223)), "side margins leaked into the square crop"
    with pytest.raises(ValueError, match="uint8"):
        preprocess_frames(frames.astype(np.float32), MINI)


def test_build_and_load_never_touch_the_network(monkeypatch, echoprime_files) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("network access during build/load")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torchvision.models.ConvNeXt_Base_Weights, "get_state_dict", refuse)
    build_view_classifier(MINI)
    load_view_classifier(echoprime_files[2], BASE)  # builds convnext_base, reads the Lightning file


def _demo_first_frames(per_view: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from hftri_mimic.demo.echo import synth_cine

    rng = np.random.default_rng(seed)
    frames, labels = [], []
    for label, view in enumerate(VIEWS):
        for _ in range(per_view):
            cine = synth_cine(
                rng,
                view=view,
                n_frames=1,
                height=64,
                width=80,
                lv_scale=rng.uniform(0.7, 1.3),
                wall_motion=rng.uniform(0.1, 0.4),
                hr_bpm=rng.uniform(50, 110),
                frame_time_ms=33.3,
            )
            frames.append(cine[0])
            labels.append(label)
    return np.stack(frames), np.array(labels)


def test_demo_classifier_learns_the_synthetic_views() -> None:
    frames, labels = _demo_first_frames(per_view=30)
    start = time.perf_counter()
    model, metrics = train_view_classifier(frames, labels, MINI, epochs=12, batch_size=32, seed=0, threads=1)
    print(
        f"\nconvnext_mini at 64 px: trained in {time.perf_counter() - start:.1f} s on {metrics['n_train']} frames, "
        f"held-out accuracy {metrics['heldout_accuracy']:.3f} on {metrics['n_heldout']}"
    )
    assert not model.training
    assert metrics["n_heldout"] == 66 and metrics["n_train"] == 264
    assert set(metrics["per_view_accuracy"]) == set(VIEWS)
    assert metrics["heldout_accuracy"] >= 0.9, f"demo views not learnt: {metrics['per_view_accuracy']}"


def test_training_is_deterministic_for_a_seed() -> None:
    frames, labels = _demo_first_frames(per_view=6, seed=1)
    runs = [train_view_classifier(frames, labels, MINI, epochs=2, batch_size=16, seed=3, threads=1) for _ in range(2)]
    probabilities = [predict_views(model, frames, MINI) for model, _ in runs]
    np.testing.assert_array_equal(probabilities[0], probabilities[1], "same seed, different classifier")
    assert runs[0][1]["n_heldout"] == 14  # ceil(0.2 * 66), stratified by view
