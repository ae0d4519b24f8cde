"""Training library (models/training/data.py, models/training/features.py, models/training/loop.py) on a small demo
workflow run:
the dataset's items and Zarr reads, lazy stores and spawn workers, the frozen-feature cache, and training
(early stopping, checkpoints, metrics log, same-seed determinism, resume after a kill) for the three tasks."""

from __future__ import annotations

import json
import pickle

import numpy as np
import polars as pl
import pytest
import torch
import zarr
from polars.testing import assert_frame_equal

import models.training.features as features_module
from models.config import MODALITIES, SUBSETS, TGMMConfig, subset_mask
from models.encoders.ecg import STMEMConfig
from models.encoders.echo import EchoEncoderConfig
from models.encoders.text import TextEncoderConfig, load_wordpiece_tokenizer
from models.training.data import HFTriDataset, make_loader
from models.training.experiment import Experiment, accuracy_threshold, run_diagnosis
from models.training.features import cache_key, feature_dataset, load_or_encode, project
from models.training.loop import ModelConfig, TrainConfig, build_model, load_checkpoint, predict, train

DIM = 32


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def out(demo_run):
    return demo_run / "results"


@pytest.fixture(scope="module")
def tokenizer(out):
    return load_wordpiece_tokenizer(out / "text/tokenizer")


@pytest.fixture(scope="module")
def splits(out):
    return pl.read_parquet(out / "hftri/splits.parquet")


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-equal tensors, NaN equal to NaN (time is NaN without follow-up)."""
    return a.dtype == b.dtype and a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan())).all())


def subjects(splits, task: str, split: str) -> list[int]:
    return splits.filter(task=task, split=split, repeat=0, fold=0)["subject_id"].to_list()


def model_config(out, unfreeze: int = 0, eval_crops: int = 3) -> ModelConfig:
    """Small demo encoders (as tests/test_multimodal.py) at the demo store's echo size (16 x 64 x 64)."""
    return ModelConfig(
        tgmm=TGMMConfig(dim=DIM, heads=2, retrieval_dim=16),
        text=TextEncoderConfig(
            vocab=str(out / "text/tokenizer"), hidden=32, layers=1, heads=2, proj_dim=DIM, unfreeze_layers=unfreeze
        ),
        ecg=STMEMConfig(width=32, depth=1, heads=2, proj_dim=DIM, unfreeze_layers=unfreeze, eval_crops=eval_crops),
        echo=EchoEncoderConfig(
            arch="mvit_small",
            size=64,
            frames=16,
            proj_dim=DIM,
            unfreeze_layers=unfreeze,
            small_channels=(8, 16),
            small_depths=(1, 1),
            small_heads=(1, 2),
        ),
    )


# --------------------------------------------------------------------------- (a) the dataset


@pytest.mark.parametrize("subset", SUBSETS)
def test_items_have_the_batch_layout_of_every_subset(out, tokenizer, splits, subset):
    ids = subjects(splits, "diagnosis", "train")[:4]
    ds = HFTriDataset(out, ids, tokenizer=tokenizer, train=False, seed=0, modalities=subset.split("+"))
    item = ds[0]
    mods = subset.split("+")
    assert item["present"].dtype == torch.bool and item["present"].shape == (3,)
    assert not (item["present"] & ~torch.tensor(subset_mask(subset))).any()
    assert item["subject_id"].dtype == torch.int64 and item["label"].dtype == torch.int64
    assert item["event"].dtype == torch.int64 and item["time"].dtype == torch.float32
    assert ("input_ids" in item) == ("lab" in mods)
    assert ("ecg" in item) == ("ecg" in mods)
    assert ("echo" in item) == ("echo" in mods) == ("view_present" in item)
    if "ecg" in item:
        assert item["ecg"].shape == (12, 2500) and item["ecg"].dtype == torch.float32
    if "echo" in item:
        assert item["echo"].shape == (11, 16, 64, 64, 3) and item["echo"].dtype == torch.uint8
        assert item["view_present"].shape == (11,) and item["view_present"].dtype == torch.bool
    if "input_ids" in item:
        assert item["input_ids"][0] == tokenizer.cls_token_id and item["input_ids"][-1] == tokenizer.sep_token_id
    batch = ds.collate_fn([ds[i] for i in range(len(ds))])
    if "lab" in mods:
        assert batch["input_ids"].shape == batch["attention_mask"].shape
        assert (batch["attention_mask"].sum(1) == torch.tensor([len(ds[i]["input_ids"]) for i in range(len(ds))])).all()


def test_items_read_their_own_zarr_rows_and_labels(out, tokenizer):
    manifest = pl.read_parquet(out / "hftri/manifest.parquet").filter(pl.col("has_ecg") & pl.col("has_echo"))
    rows = manifest.sort("ecg_row", "echo_row", descending=True).head(2)  # not simply the first rows of a store
    ds = HFTriDataset(out, rows["subject_id"].to_list(), tokenizer=tokenizer, train=False, seed=0)
    for i, row in enumerate(rows.iter_rows(named=True)):
        item = ds[i]
        assert int(item["subject_id"]) == row["subject_id"]
        ecg = zarr.open_array(store=str(out / row["ecg_zarr"]), path="ecg", mode="r")[row["ecg_row"]]
        np.testing.assert_array_equal(item["ecg"].numpy(), ecg)
        echo = zarr.open_array(store=str(out / row["echo_zarr"]), path="echo", mode="r")[row["echo_row"]]
        views = zarr.open_array(store=str(out / row["echo_zarr"]), path="view_present", mode="r")[row["echo_row"]]
        np.testing.assert_array_equal(item["echo"].numpy(), echo)
        np.testing.assert_array_equal(item["view_present"].numpy(), views)
        assert int(item["label"]) == int(row["prevalent_hf"])
        assert bool(item["has_followup"]) == row["has_followup"]
        if row["has_followup"]:
            assert int(item["event"]) == int(row["incident_hf"])
            assert float(item["time"]) == pytest.approx(row["followup_days"])
        else:
            assert int(item["event"]) == -1 and np.isnan(float(item["time"]))


def test_stores_open_lazily_and_the_dataset_pickles(out, tokenizer, splits):
    ds = HFTriDataset(out, subjects(splits, "diagnosis", "val"), tokenizer=tokenizer, train=False, seed=0)
    assert ds.opened_stores == [], "stores must not be opened in __init__"
    before = pickle.loads(pickle.dumps(ds))
    first = ds[0]
    assert ds.opened_stores, "the first item opens its stores"
    after = pickle.loads(pickle.dumps(ds))
    assert after.opened_stores == [] and before.opened_stores == []
    for copy in (before, after):
        item = copy[0]
        for key in first:
            assert same(item[key], first[key]), key


def test_train_crops_follow_seed_and_epoch(out, tokenizer, splits):
    ids = subjects(splits, "diagnosis", "train")[:8]
    full = HFTriDataset(out, ids, tokenizer=tokenizer, train=False, seed=0, modalities=("ecg",))
    ds = HFTriDataset(out, ids, tokenizer=tokenizer, train=True, seed=5, modalities=("ecg",))
    again = HFTriDataset(out, ids, tokenizer=tokenizer, train=True, seed=5, modalities=("ecg",))
    other_seed = HFTriDataset(out, ids, tokenizer=tokenizer, train=True, seed=6, modalities=("ecg",))
    epoch0 = [ds[i]["ecg"] for i in range(len(ds))]
    for i, crop in enumerate(epoch0):
        start = ds.ecg_crop_start(i)
        assert crop.shape == (12, 2250)
        assert torch.equal(crop, full[i]["ecg"][:, start : start + 2250])
        assert torch.equal(crop, again[i]["ecg"]), "same (seed, epoch) must give the same crop"
    ds.set_epoch(1)
    epoch1 = [ds[i]["ecg"] for i in range(len(ds))]
    assert any(not torch.equal(a, b) for a, b in zip(epoch0, epoch1, strict=True)), "crops must change per epoch"
    assert [ds.ecg_crop_start(i, 0) for i in range(len(ds))] != [other_seed.ecg_crop_start(i, 0) for i in range(8)]
    again.set_epoch(1)
    assert all(torch.equal(a, again[i]["ecg"]) for i, a in enumerate(epoch1))


def test_spawn_workers_give_the_same_batches(out, tokenizer, splits):
    ids = subjects(splits, "diagnosis", "train")[:8]
    ds = HFTriDataset(out, ids, tokenizer=tokenizer, train=True, seed=1)
    ds.set_epoch(3)
    loader = make_loader(ds, 3, shuffle=True, seed=11, num_workers=2)
    assert loader.multiprocessing_context.get_start_method() == "spawn"
    workers = list(loader)
    assert ds.opened_stores == [], "the workers opened their own stores, not the main process"
    inline = list(make_loader(ds, 3, shuffle=True, seed=11, num_workers=0))
    assert len(inline) == len(workers) == 3
    for a, b in zip(inline, workers, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert same(a[key], b[key]), key


# --------------------------------------------------------------------------- (b) feature cache


@pytest.fixture(scope="module")
def cached(out, tmp_path_factory):
    cache_dir = tmp_path_factory.mktemp("features")
    model = build_model(model_config(out))
    features, path = load_or_encode(model, out, cache_dir)
    return model, features, path, cache_dir


def test_feature_cache_is_reused_and_keyed_by_encoder_config(out, cached, monkeypatch):
    model, features, path, cache_dir = cached
    n = pl.read_parquet(out / "hftri/manifest.parquet").height
    assert path.is_file() and path.name.startswith("features-") and len(features["subject_id"]) == n
    assert features["present"].shape == (n, 3) and features["echo"].shape == (n, 512)

    calls = []
    monkeypatch.setattr(features_module, "encode_all", lambda *a, **k: calls.append(1))
    forwards = []
    hooks = [m.register_forward_hook(lambda *a: forwards.append(1)) for m in (model.text, model.ecg.vit, model.echo)]
    try:
        again, path2 = load_or_encode(model, out, cache_dir)
    finally:
        for h in hooks:
            h.remove()
    assert path2 == path and not calls and not forwards, "the second call must load the file, not encode"
    for key in features:
        assert torch.equal(again[key], features[key])

    key, _ = cache_key(model, out)
    other, _ = cache_key(build_model(model_config(out, eval_crops=1)), out)
    assert key != other, "another encoder config must change the cache key"
    assert cache_key(build_model(model_config(out)), out)[0] == key, "the same config gives the same key"
    with pytest.raises(ValueError, match="frozen"):
        load_or_encode(build_model(model_config(out, unfreeze=1)), out, cache_dir)


def test_cached_features_equal_the_encoders_in_eval_mode(out, tokenizer, cached):
    model, features, _, _ = cached
    ids = features["subject_id"][:4].tolist()
    raw = HFTriDataset(out, ids, tokenizer=tokenizer, train=False, seed=0)
    batch = raw.collate_fn([raw[i] for i in range(len(raw))])
    fs = feature_dataset(features, out, ids)
    model.eval()
    with torch.no_grad():
        expected, present = model.encode(batch, "lab+ecg+echo")
        got, got_present = project(model, fs.tensors, "lab+ecg+echo")
    assert torch.equal(present, got_present)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------- (c, d) training, determinism, resume

CONFIG = TrainConfig(epochs=30, batch_size=8, patience=3, scheduler_patience=1, seed=7, progress=False)


def diagnosis_data(out, splits, features, subset="lab+ecg+echo"):
    mods = subset.split("+")
    return [feature_dataset(features, out, subjects(splits, "diagnosis", s), mods) for s in ("train", "val", "test")]


def log_without_seconds(path):
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def uninterrupted(out, splits, cached, tmp_path_factory):
    _, features, _, _ = cached
    tr, va, te = diagnosis_data(out, splits, features)
    run = tmp_path_factory.mktemp("run_a")
    result = train("diagnosis", "lab+ecg+echo", lambda: build_model(model_config(out)), tr, va, CONFIG, run)
    return result, predict("diagnosis", "lab+ecg+echo", result.model, te)


def test_training_on_cached_features_early_stops_and_writes_its_files(uninterrupted):
    result, predictions = uninterrupted
    assert result.metric == "auc" and 0.0 <= result.best_metric <= 1.0
    assert result.stopped_early and result.epochs_run == result.best_epoch + 1 + CONFIG.patience < CONFIG.epochs
    assert result.best_path.is_file() and result.last_path.is_file() and result.log_path.is_file()
    log = [json.loads(line) for line in result.log_path.read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(result.epochs_run))
    assert {"train_loss", "val_loss", "value", "lr", "seconds"} <= log[0].keys()
    assert max(r["value"] for r in log) == result.best_metric == log[result.best_epoch]["value"]
    best = torch.load(result.best_path, weights_only=True)
    assert best["epoch"] == result.best_epoch
    assert not any(k.startswith(("text.bert.encoder", "ecg.vit.block", "echo.video.blocks")) for k in best["model"])
    assert set(predictions.columns) == {"subject_id", "label", "score", "logodds", "pred"}
    assert predictions["score"].is_between(0, 1).all()


def test_same_seed_gives_the_same_predictions(out, splits, cached, uninterrupted, tmp_path):
    _, features, _, _ = cached
    tr, va, te = diagnosis_data(out, splits, features)
    result = train("diagnosis", "lab+ecg+echo", lambda: build_model(model_config(out)), tr, va, CONFIG, tmp_path)
    assert_frame_equal(predict("diagnosis", "lab+ecg+echo", result.model, te), uninterrupted[1])
    assert log_without_seconds(result.log_path) == log_without_seconds(uninterrupted[0].log_path)
    # a fresh model loading best.pt predicts the same (frozen encoder weights are rebuilt, and checked)
    fresh = build_model(model_config(out))
    load_checkpoint(fresh, result.best_path)
    assert_frame_equal(predict("diagnosis", "lab+ecg+echo", fresh, te), uninterrupted[1])


def test_killed_run_resumes_to_the_uninterrupted_result(out, splits, cached, uninterrupted, tmp_path):
    _, features, _, _ = cached
    tr, va, te = diagnosis_data(out, splits, features)
    factory = lambda: build_model(model_config(out))  # noqa: E731

    # Kill after the second epoch, or earlier so that the best epoch is trained after the restart.
    kill_at = min(1, max(0, uninterrupted[0].best_epoch - 1))

    def kill(epoch, record):
        if epoch == kill_at:
            raise KeyboardInterrupt(f"killed after epoch {epoch}")

    with pytest.raises(KeyboardInterrupt):
        train("diagnosis", "lab+ecg+echo", factory, tr, va, CONFIG, tmp_path, on_epoch_end=kill)
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == kill_at + 1
    result = train("diagnosis", "lab+ecg+echo", factory, tr, va, CONFIG, tmp_path)
    assert result.resumed and result.epochs_run == uninterrupted[0].epochs_run
    assert result.best_epoch == uninterrupted[0].best_epoch
    assert log_without_seconds(result.log_path) == log_without_seconds(uninterrupted[0].log_path)
    assert_frame_equal(predict("diagnosis", "lab+ecg+echo", result.model, te), uninterrupted[1])
    # a finished run returns its result without training again
    done = train("diagnosis", "lab+ecg+echo", factory, tr, va, CONFIG, tmp_path)
    assert done.resumed and done.epochs_run == result.epochs_run
    assert_frame_equal(predict("diagnosis", "lab+ecg+echo", done.model, te), uninterrupted[1])


def test_configs_round_trip_through_plain_dicts(out):
    config = model_config(out)
    plain = json.loads(json.dumps(config.to_dict()))  # as YAML gives it: lists, no tuples
    assert ModelConfig.from_dict(plain) == config
    assert TrainConfig.from_dict(json.loads(json.dumps(CONFIG.to_dict()))) == CONFIG
    with pytest.raises(ValueError, match="lr_typo"):
        TrainConfig.from_dict({"lr_typo": 1})


# --------------------------------------------------------------------------- (e) prognosis, retrieval, raw data


def test_prognosis_and_retrieval_train_one_epoch(out, splits, cached, tmp_path):
    _, features, _, _ = cached
    one = TrainConfig(epochs=1, batch_size=8, seed=1, progress=False)
    factory = lambda: build_model(model_config(out))  # noqa: E731
    prog = [feature_dataset(features, out, subjects(splits, "prognosis", s), ("lab", "ecg")) for s in ("train", "val")]
    result = train("prognosis", "lab+ecg", factory, *prog, one, tmp_path / "prognosis")
    assert result.epochs_run == 1 and result.metric in ("cindex", "loss")
    test = feature_dataset(features, out, subjects(splits, "prognosis", "test"), ("lab", "ecg"))
    pred = predict("prognosis", "lab+ecg", result.model, test)
    assert {"subject_id", "event", "time", "risk", "score", "pred"} <= set(pred.columns)
    assert pred.height == len(test) and pred["risk"].is_finite().all()

    retr = [feature_dataset(features, out, subjects(splits, "diagnosis", s)) for s in ("train", "val", "test")]
    result = train("retrieval", "lab+ecg+echo", factory, retr[0], retr[1], one, tmp_path / "retrieval")
    assert result.epochs_run == 1 and result.metric == "loss"
    pred = predict("retrieval", "lab+ecg+echo", result.model, retr[2])
    for name in MODALITIES:
        rows = pred.filter(pl.col(f"has_{name}"))[f"emb_{name}"].to_list()
        assert rows and all(abs(np.linalg.norm(r) - 1) < 1e-4 for r in rows)


def test_raw_data_path_trains_unfrozen_encoders(out, tokenizer, splits, tmp_path):
    ids = subjects(splits, "diagnosis", "train")[:8]
    val = subjects(splits, "diagnosis", "val")[:6]
    tr = HFTriDataset(out, ids, tokenizer=tokenizer, train=True, seed=2, modalities=("lab", "ecg"))
    va = HFTriDataset(out, val, tokenizer=tokenizer, train=False, seed=2, modalities=("lab", "ecg"))
    cfg = TrainConfig(epochs=1, batch_size=4, seed=2, progress=False, metrics={"diagnosis": "loss"})
    initial = build_model(model_config(out, unfreeze=1)).ecg.vit.block0.ff.fn.net[0].weight.clone()
    result = train("diagnosis", "lab+ecg", lambda: build_model(model_config(out, unfreeze=1)), tr, va, cfg, tmp_path)
    assert result.epochs_run == 1
    assert not torch.equal(result.model.ecg.vit.block0.ff.fn.net[0].weight.cpu(), initial), "the last ECG block trains"
    pred = predict("diagnosis", "lab+ecg", result.model, va)
    assert pred["subject_id"].to_list() == [s for s in val if s not in va.dropped]


# --------------------------------------------------------------------------- (f) seed ensembles, decision threshold


def test_ensemble_averages_its_members_and_thresholds_on_validation(out, splits, cached, tmp_path):
    _, features, _, _ = cached
    config = TrainConfig(epochs=3, batch_size=8, patience=2, seed=3, ensemble={"diagnosis": 2}, progress=False)
    experiment = Experiment(out, model_config(out), config, tmp_path, features)
    predictions, summary = run_diagnosis(experiment, "lab+ecg")

    assert len(summary["runs"]) == 2
    assert (tmp_path / "run/best.pt").is_file() and (tmp_path / "run/member1/best.pt").is_file()
    test_ids = subjects(splits, "diagnosis", "test")
    stats = torch.load(tmp_path / "run/feature_stats.pt", weights_only=False)
    data = feature_dataset(features, out, test_ids, ("lab", "ecg"), stats=stats)
    member_scores = []
    for folder in ("run", "run/member1"):
        model = build_model(model_config(out))
        load_checkpoint(model, tmp_path / folder / "best.pt")
        member_scores.append(predict("diagnosis", "lab+ecg", model, data)["score"].to_numpy())
    assert not np.allclose(member_scores[0], member_scores[1]), "members with other seeds must differ"
    test = predictions.filter(split="test").sort("subject_id")
    np.testing.assert_allclose(test["score"].to_numpy(), np.mean(member_scores, axis=0), rtol=1e-6)

    # the threshold is the most accurate one on the validation split, and pred follows it on every split
    val = predictions.filter(split="val")
    threshold = summary["threshold"]
    accuracy = lambda t: ((val["score"].to_numpy() >= t) == val["label"].to_numpy()).mean()  # noqa: E731
    candidates = [*val["score"].to_list(), np.inf]
    assert accuracy(threshold) == pytest.approx(max(accuracy(t) for t in candidates))
    assert (predictions["pred"] == (predictions["score"] >= threshold).cast(pl.Int64)).all()


def test_accuracy_threshold_separates_shifted_scores():
    scores = np.array([0.80, 0.82, 0.85, 0.90, 0.91, 0.95])  # all above 0.5: a shifted but perfect ranking
    labels = np.array([0, 0, 0, 1, 1, 1])
    threshold = accuracy_threshold(scores, labels)
    assert 0.85 < threshold <= 0.90
    assert accuracy_threshold(scores, np.zeros(6)) == 0.5
