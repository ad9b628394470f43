"""Learning curves of the shared DDPM recipe: one model on all of a dataset's training images,
featnet FID and recall of its EMA weights' samples against optimizer steps and CPU-seconds.
docs/quality.md reads them; every suite's budget is chosen from them.

    .venv/bin/python scripts/learning_curves.py mnist --size 14 --model small --steps 250,500,1000,2000
    .venv/bin/python scripts/learning_curves.py --plot        # docs/quality/curves.png and the table

Each checkpoint appends one JSON line to docs/quality/curves.jsonl (a curve already there for
the same settings is skipped; --again measures it anew).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from fedfuse.bench.metrics import references, spaces
from fedfuse.bench.metrics.featnet import feature_net
from fedfuse.bench.metrics.quality import save_grid, score
from fedfuse.datasets import ClientData
from fedfuse.datasets.loading import load
from fedfuse.toolkit import ddpm, models
from fedfuse.toolkit.device import Resources, describe
from fedfuse.toolkit.sampling import sample

OUT = Path(__file__).resolve().parent.parent / "docs" / "quality"
RECORDS = OUT / "curves.jsonl"


def settings(args) -> dict:
    out = {"dataset": args.dataset, "size": args.size, "model": args.model, "lr": args.lr,
           "batch_size": args.batch_size, "warmup_steps": args.warmup, "ema_decay": args.ema,
           "timesteps": args.timesteps, "samples": args.samples, "sample_steps": args.sample_steps,
           "threads": torch.get_num_threads()}
    if args.accelerator != "cpu":  # CPU curves keep their original keys (and stay "already measured")
        out.update(accelerator=args.accelerator, precision=args.precision)
    return out


def recipe_label(s: dict) -> str:
    """'' for the CPU curves' recipe (T 200, batch 64, lr 2e-3, EMA 0.995), else what differs:
    curves of one preset under two recipes are two curves, and their grids two files."""
    default = {"timesteps": 200, "batch_size": 64, "lr": 2e-3, "ema_decay": 0.995, "warmup_steps": 100}
    short = {"timesteps": "T", "batch_size": "b", "lr": "lr", "ema_decay": "ema", "warmup_steps": "wu"}
    return "".join(f"-{short[k]}{s[k]:g}" for k in default if s[k] != default[k])


def done(setting: dict, records: Path) -> bool:
    if not records.is_file():
        return False
    return any(json.loads(line)["settings"] == setting for line in records.read_text().splitlines() if line)


def measure(args) -> None:
    setting, records = settings(args), Path(args.records)
    resources = Resources(accelerator=args.accelerator, precision=args.precision)
    if done(setting, records) and not args.again:
        print("already measured:", setting)
        return
    dargs = {"size": args.size} if args.size else {}
    data = load(args.dataset, dargs)
    net, card = feature_net(spaces.featnet_name(args.dataset, dargs, data), data)
    held = data.eval_images[torch.randperm(len(data.eval_images), generator=torch.Generator().manual_seed(7))[:args.samples]]
    refs = references.compute(net, held, data.train_images, args.samples)
    everything = ClientData(data.train_images, data.train_labels, torch.arange(len(data.train_labels)))
    model = models.build_unet(data.image_shape, args.model, seed=0)
    ema, recipe = ddpm.Ema(model, args.ema), ddpm.Recipe(args.lr, args.batch_size, args.warmup, args.ema)
    scheduler, gen = ddpm.build_scheduler(args.timesteps), torch.Generator().manual_seed(0)
    steps_done, cpu, wall = 0, 0.0, 0.0
    for target in sorted(int(s) for s in args.steps.split(",")):
        c0, w0 = time.process_time(), time.time()
        loss = ddpm.train(model, scheduler, everything, target - steps_done, recipe, gen, resources,
                          start_step=steps_done, ema=ema)
        cpu, wall, steps_done = cpu + time.process_time() - c0, wall + time.time() - w0, target
        e0 = time.time()
        images = sample(ema.model, args.samples, data.image_shape, args.timesteps, args.sample_steps, seed=1,
                        resources=resources)
        q = score(net, held, images)
        tag = f"{args.dataset}{args.size or ''}-{args.model}-{target}{recipe_label(setting)}"
        grids = records.parent / "grids"
        grids.mkdir(parents=True, exist_ok=True)
        save_grid(images, grids / f"{tag}{'-' + args.accelerator if args.accelerator != 'cpu' else ''}.png")
        row = {"settings": setting, "steps": target, "train_cpu_s": round(cpu, 1), "train_wall_s": round(wall, 1),
               "eval_wall_s": round(time.time() - e0, 1), "loss": loss, "params": sum(p.numel() for p in model.parameters()),
               "feature_space": card["feature_space"], **{k: q[k] for k in ("fid", "kid", "recall", "coverage", "precision")},
               "ref": {r: {k: refs[r][k] for k in ("fid", "recall")} for r in refs}}
        if args.accelerator != "cpu":
            row["system"] = describe(resources)
        print(json.dumps(row), flush=True)
        with records.open("a") as f:
            f.write(json.dumps(row) + "\n")


def plot() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[str, list] = {}
    gpu = RECORDS.with_name("curves-gpu.jsonl")  # scripts/gpu_checks.sh's; no CPU-seconds axis for these
    for path in (RECORDS, gpu) if gpu.is_file() else (RECORDS,):
        for line in path.read_text().splitlines():
            r = json.loads(line)
            s = r["settings"]
            card = f" ({r['system']['device_name']})" if "system" in r else ""
            label = f"{s['dataset']}{s['size'] or ''} {s['model']}{recipe_label(s).replace('-', ' ')}{card}"
            curves.setdefault(label, []).append(r)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for i, (label, rows) in enumerate(sorted(curves.items())):
        rows.sort(key=lambda r: r["steps"])
        ratio = [r["fid"] / r["ref"]["noise"]["fid"] for r in rows]
        style = {"marker": "o", "color": plt.get_cmap("tab20")(i % 20), "label": label}  # one colour per curve, every axis
        axes[0].plot([r["steps"] for r in rows], ratio, **style)
        if "system" not in rows[0]:
            axes[1].plot([r["train_cpu_s"] for r in rows], ratio, **style)
        axes[2].plot([r["steps"] for r in rows], [r["recall"] for r in rows], **style)
    from matplotlib.ticker import NullFormatter

    for ax, xl, yl in zip(axes, ("optimizer steps", "training CPU-seconds (one core)", "optimizer steps"),
                          ("FID / FID(pure noise)", "FID / FID(pure noise)", "recall")):
        ax.set_xlabel(xl), ax.set_ylabel(yl), ax.grid(alpha=0.3)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    for ax in axes[:2]:
        ax.axhline(0.25, color="k", ls="--", lw=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(NullFormatter())
    axes[2].axhline(0.2, color="k", ls="--", lw=0.8)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / "curves.png", dpi=100)


def table() -> str:
    """The records as the Markdown table docs/quality.md shows."""
    lines = ["| data | model | params | steps | train CPU-s | FID | FID / noise | recall | real floor | noise |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    rows = [json.loads(line) for line in RECORDS.read_text().splitlines() if line]
    for r in sorted(rows, key=lambda r: (r["settings"]["dataset"], r["settings"]["size"], r["settings"]["model"], r["steps"])):
        s = r["settings"]
        side = s["size"] or {"digits": 8}.get(s["dataset"], 28)
        lines.append(f"| {s['dataset']} {side} px | {s['model']}{recipe_label(s).replace('-', ' ')} | {r['params'] / 1e3:.0f} k | {r['steps']} | "
                     f"{r['train_cpu_s']:.0f} | {r['fid']:.1f} | {r['fid'] / r['ref']['noise']['fid']:.3f} | "
                     f"{r['recall']:.2f} | {r['ref']['real']['fid']:.1f} | {r['ref']['noise']['fid']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", nargs="?")
    p.add_argument("--size", type=int, default=0, help="resize the 28x28 datasets (e.g. 14)")
    p.add_argument("--model", default="small", choices=list(models.PRESETS))
    p.add_argument("--steps", default="250,500,1000,2000")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--timesteps", type=int, default=200)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--sample-steps", type=int, default=50)
    p.add_argument("--accelerator", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed", "16-mixed"])
    p.add_argument("--records", default=str(RECORDS), help="the JSON-lines file to append to (grids go beside it)")
    p.add_argument("--again", action="store_true")
    p.add_argument("--plot", action="store_true")
    args = p.parse_args()
    if args.plot:
        plot()
        print(table())
        return
    measure(args)


if __name__ == "__main__":
    main()
