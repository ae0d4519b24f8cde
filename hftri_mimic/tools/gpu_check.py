"""A short GPU check of training: one epoch of TGMM diagnosis on a finished workflow run's dataset, encoders
unfrozen (the raw-data path, the heavy one), bf16 autocast when the GPU supports it.  Prints samples/s and the
peak GPU memory.

    python -m hftri_mimic.tools.gpu_check --config config.yaml            # after `snakemake dataset` (or `all`)
    python -m hftri_mimic.tools.gpu_check --config config.yaml --unfreeze 0 --device cpu

Runs on the CPU as well (no memory figure then).  Uses the config's model sizes (the demo's small encoders, or the
real checkpoints when configured) and ``train.optim``.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import polars as pl
import torch
import yaml

from models.training.data import HFTriDataset, make_loader
from models.training.loop import ModelConfig, TrainConfig, _forward_loss, _to, _use_amp, build_model, pick_device


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="config.yaml", help="the workflow config (its out_dir holds hftri/)")
    parser.add_argument("--unfreeze", type=int, default=2, help="unfreeze_layers for every encoder (default 2)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--batch-size", type=int, default=None, help="default: train.optim.batch_size")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (spawn)")
    args = parser.parse_args(argv)

    config = yaml.safe_load(Path(args.config).read_text())
    out = Path(config["out_dir"])
    model_dict = copy.deepcopy(config["model"])
    if not model_dict["text"].get("folder"):
        model_dict["text"]["vocab"] = config["dataset"]["text"]["tokenizer"] or str(out / "text/tokenizer")
    for part in ("text", "ecg", "echo"):
        model_dict[part]["unfreeze_layers"] = args.unfreeze
    model_config = ModelConfig.from_dict(model_dict)
    train_config = TrainConfig.from_dict({**config["train"]["optim"], "device": args.device})
    device = pick_device(train_config.device)
    amp = _use_amp(train_config, device)
    torch.manual_seed(train_config.seed)

    model = build_model(model_config).to(device)
    splits = pl.read_parquet(out / "hftri/splits.parquet")
    subjects = splits.filter(task="diagnosis", split="train")["subject_id"].sort().to_list()
    data = HFTriDataset(
        out, subjects, tokenizer=model.text.tokenizer, max_tokens=model.text.max_length, train=True, seed=0
    )
    batch_size = args.batch_size or train_config.batch_size
    loader = make_loader(data, batch_size, shuffle=True, seed=0, num_workers=args.workers)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train_config.lr)  # the check times the model, not the optimiser
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.train()
    seen, started, first_batch = 0, time.perf_counter(), None
    for batch in loader:
        batch = _to(batch, device)
        _, loss = _forward_loss(model, batch, "lab+ecg+echo", "diagnosis", amp)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(batch["subject_id"])
        if first_batch is None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            first_batch = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    steady = seconds - (first_batch - started) if first_batch else seconds
    trainable = sum(p.numel() for p in params)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), amp={amp}")
    print(
        f"one epoch: {seen} patients in {seconds:.1f} s = {seen / seconds:.1f} samples/s "
        f"({max(seen - batch_size, 0) / max(steady, 1e-9):.1f} samples/s after the first batch), "
        f"{trainable / 1e6:.2f} M trainable parameters, unfreeze_layers={args.unfreeze}, batch {batch_size}"
    )
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
