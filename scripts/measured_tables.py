"""Write a protocol README's measured section from a results directory:

    .venv/bin/python scripts/measured_tables.py split-diffusion fedfuse-out/

The table is the leaderboard's (mean ± std over seeds, n, * for missing seeds or failed cells)
plus the protocol's own columns; the figure shows the study's trade-off, saved beside the README.
"""

import sys
from pathlib import Path

from fedfuse.leaderboard.rows import ranked_rows
from fedfuse.leaderboard.html import grid_of
from fedfuse.leaderboard.render import markdown
from fedfuse.results.store import ResultStore
from fedfuse.plugins.manager import registry

STUDIES = {  # protocol folder, extra table columns, the figure's panels [(x, y), ...]
    "fedavg-lora": ("fedavg_lora", ("trained_params", "aggregation_error", "base_fid", "eval_loss", "pretrain_s"),
                    [("bytes_up", "fid"), ("aggregation_error", "fid"), ("bytes_up", "mia_auc")]),
    "split-diffusion": ("split_diffusion", ("cut_ratio", "server_flops", "client_gen_flops", "nn_mse", "nn_ssim",
                                            "disclosure_fid_cut", "disclosure_fid_approx",
                                            "disclosure_fid_approx_heldout", "disclosure_fid_fresh"),
                        [("cut_ratio", "client_flops"), ("cut_ratio", "disclosure_fid_approx"), ("cut_ratio", "fid")]),
    "ondemand-quant": ("ondemand_quant", ("mean_bits", "e_static_j", "rounds_to_target", "energy_to_target_j",
                                          "latency_to_target_s", "eval_loss"),
                       [("mean_bits", "fid"), ("energy_j", "fid"), ("mean_bits", "energy_j"),
                        ("mean_bits", "energy_to_target_j")]),
}
MARK = "## Measured"


def figure(rows, panels: list[tuple[str, str]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.3))
    several, splits = len({r.data for r in rows}) > 1, split_names(rows)
    for ax, (x, y) in zip(axes, panels):
        for r in rows:
            if r.values.get(x) and r.values.get(y):
                ax.errorbar(r.mean(x), r.mean(y), xerr=r.std(x), yerr=r.std(y), fmt="o", capsize=3)
                name = f"{r.label}, {splits[id(r)]}" if several else r.label
                ax.annotate(name, (r.mean(x), r.mean(y)), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if x.startswith("bytes"):  # LoRA's megabytes beside full fine-tuning's hundred: a log axis
            ax.set_xscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def split_names(rows) -> dict[int, str]:
    """{id(row): how its data split is named beside its label}: the partitioner without its
    arguments (``dirichlet``) where that tells a configuration's rows apart, else all of its data."""
    def short(r):
        return r.partition.split("(")[0]

    clash = {(r.label, short(r)) for r in rows for o in rows
             if o is not r and (o.label, short(o)) == (r.label, short(r)) and o.data != r.data}
    return {id(r): r.data if (r.label, short(r)) in clash else short(r) for r in rows}


def sample_grids(rows, folder: Path) -> str:
    """One sample grid per configuration (the leaderboard page's), copied beside the README."""
    import shutil

    folder.mkdir(exist_ok=True)
    several = len({r.data for r in rows}) > 1  # then a configuration has a grid per data split
    splits, cells = split_names(rows), []
    for r in rows:
        grid = grid_of(r)
        if grid is not None:
            title = f"{r.label}, {splits[id(r)]}" if several else r.label
            name = "".join(c if c.isalnum() or c in "-." else "_" for c in title) + ".png"
            if any(path == f"samples/{name}" for _, path in cells):
                sys.exit(f"two configurations would share the sample grid {name}")
            shutil.copyfile(grid, folder / name)
            cells.append((title, f"samples/{name}"))
    heads = " | ".join(label for label, _ in cells)
    images = " | ".join(f'<img src="{path}" width="128">' for _, path in cells)
    return f"Samples (lowest seed; client 0 where each client samples its own classes):\n\n| {heads} |\n|{'---|' * len(cells)}\n| {images} |\n"


def main(study: str, out: str) -> None:
    folder, extra, panels = STUDIES[study]
    records = ResultStore(Path(out) / "results.sqlite").records()
    # the study as it was measured (its store's protocol versions), each row's newest set-up only
    rows = [r for r in ranked_rows(records, registry(), as_recorded=True) if not r.outdated]
    readme = Path(__file__).resolve().parents[1] / "fedfuse" / "protocols" / folder / "README.md"
    figure(rows, panels, readme.with_name("tradeoff.png"))
    head = readme.read_text().split(MARK)[0]
    body = (f"{MARK} (`fedfuse run seed-{study}`)\n\nMeasured on 2 CPU cores; regenerate with "
            f"`python scripts/measured_tables.py {study} <out>`.\n\n{markdown(rows, extra)}\n\n![trade-off](tradeoff.png)\n\n"
            f"{sample_grids(rows, readme.with_name('samples'))}")
    readme.write_text(head + body)


if __name__ == "__main__":
    main(*sys.argv[1:3])
