"""``fedfuse data show``: what a partition gives each client, as a table (and a heatmap)."""

from __future__ import annotations

from rich.table import Table

from fedfuse.bench.suites.cells import DataSplit
from fedfuse.bench.suites.parse import parse_value
from fedfuse.datasets.loading import allowed_args, load
from fedfuse.datasets.partition import allowed_args as partitioner_args
from fedfuse.datasets.partition import cached_partition, describe, with_defaults
from fedfuse.plugins.config import ConfigError
from fedfuse.plugins.manager import registry


def parse_pairs(items: list[str], flag: str, allowed: dict) -> dict:
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"{flag} {item}: expected K=V")
        if key not in allowed:
            raise ConfigError(f"{flag} {item}: unknown argument '{key}'; allowed: {', '.join(allowed) or 'none'}")
        out[key] = parse_value(raw)
    return out


def show_partition(args, console) -> dict:
    reg = registry()
    dspec, pspec = reg.get("datasets", args.dataset), reg.get("partitioners", args.partitioner)
    data_args = parse_pairs(args.data_arg, "--data-arg", allowed_args(dspec))
    part_args = with_defaults(pspec, parse_pairs(args.arg, "--arg", partitioner_args(pspec)))
    cell = DataSplit(args.dataset, data_args, args.partitioner, part_args, args.clients, args.seed)
    data = load(args.dataset, data_args)
    try:
        parts = cached_partition(*cell.key())
    except (ValueError, IndexError, KeyError, AssertionError) as err:  # as a suite's preflight says it
        raise ConfigError(f"{args.dataset} split by {args.partitioner} over {args.clients} clients: cannot be "
                          f"built: {type(err).__name__}: {err}") from None
    summary = describe(data, parts, args.partitioner, part_args)
    console.print(partition_table(cell, data.class_names, summary))
    console.print(f"mean total-variation distance to the pooled label distribution: "
                  f"{summary['mean_tv_distance']:.3f} (0 = IID, 1 = disjoint)")
    if "sets" in summary:
        console.print(sets_table(summary["sets"]))
        console.print(f"{summary['sets']['matching_none']} private image(s) match no set and belong to no client")
    if args.plot:
        save_heatmap(summary, data.class_names, cell, args.plot)
        console.print(f"heatmap written to {args.plot}")
    return summary


def partition_table(cell: DataSplit, class_names, summary: dict) -> Table:
    table = Table(title=f"{cell.dataset_name} / {cell.partition_name} / {cell.clients} clients / seed {cell.seed}")
    table.add_column("client", justify="right")
    for name in class_names:
        table.add_column(name[:8], justify="right")
    table.add_column("total", justify="right")
    table.add_column("TV", justify="right")
    for i, (row, tv) in enumerate(zip(summary["counts"], summary["tv_distance"])):
        table.add_row(str(i), *(str(c) for c in row), str(sum(row)), f"{tv:.2f}")
    return table


def sets_table(sets: dict) -> Table:
    """Per attribute set: images matching it, images its client got, and overlaps with the
    other sets (an image matching several went to one of them, drawn by the seed)."""
    n = len(sets["sets"])
    table = Table(title="attribute sets: matching images, assigned, and images matching both set i and set j")
    for name in ("set", "attributes", "matching", "assigned", *(f"∩ {j}" for j in range(n))):
        table.add_column(name, justify="left" if name == "attributes" else "right")
    for i, attrs in enumerate(sets["sets"]):
        overlaps = ["·" if i == j else str(sets["overlaps"][i][j]) for j in range(n)]
        table.add_row(str(i), " & ".join(attrs), str(sets["matching"][i]), str(sets["assigned"][i]), *overlaps)
    return table


def save_heatmap(summary: dict, class_names, cell: DataSplit, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = summary["counts"]
    fig, ax = plt.subplots(figsize=(1 + 0.5 * len(class_names), 1 + 0.35 * len(counts)))
    im = ax.imshow(counts, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(class_names)), [c[:10] for c in class_names], rotation=45, ha="right")
    ax.set_yticks(range(len(counts)))
    ax.set_xlabel("class")
    ax.set_ylabel("client")
    ax.set_title(f"{cell.partition_name}, mean TV {summary['mean_tv_distance']:.2f}", fontsize=9)
    fig.colorbar(im, ax=ax, label="images")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
