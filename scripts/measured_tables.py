"""Write a protocol README's measured section from a results directory:

    .venv/bin/python scripts/measured_tables.py split-diffusion fedfuse-out/

The table is the leaderboard's (mean ± std over seeds, n, * for missing seeds or failed cells)
plus the protocol's own columns; the figure shows the study's trade-off, saved beside the README.
"""

import sys
from pathlib import Path

from fedfuse.bench.cli import ranked_rows
from fedfuse.leaderboard.render import markdown
from fedfuse.leaderboard.store import ResultStore

STUDIES = {  # protocol folder, extra table columns, (x, [y, ...]) of the figure
    "fedavg-lora": ("fedavg_lora", ("trained_params", "base_fid", "eval_loss", "pretrain_s"),
                    ("bytes_up", ["fid", "energy_j"])),
    "split-diffusion": ("split_diffusion", ("cut_ratio", "server_flops", "nn_mse", "nn_ssim", "recon_nn_mse"),
                        ("cut_ratio", ["client_flops", "nn_mse", "fid"])),
    "ondemand-quant": ("ondemand_quant", ("mean_bits", "eval_loss"), ("bytes_up", ["energy_j", "fid"])),
}
MARK = "## Measured"


def figure(rows, x: str, ys: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ys), figsize=(4.2 * len(ys), 3.3))
    for ax, y in zip(axes, ys):
        for r in rows:
            if r.values.get(x) and r.values.get(y):
                ax.errorbar(r.mean(x), r.mean(y), xerr=r.std(x), yerr=r.std(y), fmt="o", capsize=3)
                ax.annotate(r.label, (r.mean(x), r.mean(y)), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(study: str, out: str) -> None:
    folder, extra, (x, ys) = STUDIES[study]
    rows = ranked_rows(ResultStore(Path(out) / "results.sqlite").records())
    readme = Path(__file__).resolve().parents[1] / "fedfuse" / "protocols" / folder / "README.md"
    figure(rows, x, ys, readme.with_name("tradeoff.png"))
    head = readme.read_text().split(MARK)[0]
    body = (f"{MARK} (`fedfuse run seed-{study}`)\n\nMeasured on 2 CPU cores; regenerate with "
            f"`python scripts/measured_tables.py {study} <out>`.\n\n{markdown(rows, extra)}\n\n![trade-off](tradeoff.png)\n")
    readme.write_text(head + body)


if __name__ == "__main__":
    main(*sys.argv[1:3])
