"""`fedfuse results`, `leaderboard`, `site`, `publish` and `report`: read output folders, never write them."""

from __future__ import annotations

import sys
from pathlib import Path

from fedfuse.bench.cli.common import console
from fedfuse.plugins.config import ConfigError
from fedfuse.plugins.manager import PluginError, registry


def cmd_leaderboard(args) -> int:
    from fedfuse.leaderboard.rows import ranked_rows, read_records
    from fedfuse.leaderboard import render

    records = read_records(args.out)
    rows = ranked_rows(records, registry())
    suffix = Path(args.dest).suffix.lower() if args.dest else ""
    args.format = args.format or {".html": "html", ".htm": "html", ".json": "json"}.get(suffix, "md")
    if args.format == "html":
        from fedfuse.leaderboard.html import page

        text = page(rows, records, Path(args.dest or "leaderboard.html").resolve())
    else:
        text = render.markdown(rows) if args.format == "md" else render.to_json(rows)
    if args.dest:
        Path(args.dest).write_text(text + "\n")
    else:
        print(text)
    if args.plot:
        target = Path(args.dest or "leaderboard").with_suffix(".png")
        render.tradeoff_plot(rows, args.plot[0], args.plot[1], target, f"{args.plot[1]} vs {args.plot[0]}")
    return 0


def cmd_site(args) -> int:
    """One static site over several results stores: an index and a page per store."""
    from fedfuse.leaderboard.html import index_page, page
    from fedfuse.leaderboard.rows import ranked_rows, read_records

    stores = [Path(s) for s in args.stores] or sorted(p.parent for p in Path("runs").glob("*/results.sqlite"))
    if not stores:
        raise ConfigError("no results stores given, and none under runs/")
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    entries = []
    for store in stores:
        records = read_records(store)
        rows = ranked_rows(records, registry())
        name = f"{store.name}.html"
        (dest / name).write_text(page(rows, records, (dest / name).resolve()) + "\n")
        entries.append((name, str(store), rows))
    (dest / "index.html").write_text(index_page(entries) + "\n")
    console().print(f"{len(entries)} pages and index.html written to {dest}/")
    return 0


def cmd_publish(args) -> int:
    from fedfuse.leaderboard.rows import ranked_rows, read_records
    records = read_records(args.out)
    options = {"project": args.project, "entity": args.entity, "mode": args.mode, "out": args.out,
               "dir": str(Path(args.out).resolve()), "rows": ranked_rows(records, registry())}
    answer = registry().pm.hook.fedfuse_publish(results=records, target=args.target, options=options)
    if answer is None:
        raise PluginError(f"no plugin publishes to '{args.target}' (built in: wandb)")
    print(f"published {answer}")
    return 0


def cmd_results(args) -> int:
    from fedfuse.leaderboard.rows import read_records
    from fedfuse.leaderboard.tables import rich_table, to_csv, to_json

    records = read_records(args.out)
    if args.format == "table":
        console().print(rich_table(records))
    else:
        sys.stdout.write(to_json(records) + "\n" if args.format == "json" else to_csv(records))
    return 0


def cmd_report(args) -> int:
    from fedfuse.leaderboard.report import page, study_rows, write_between_markers
    from fedfuse.leaderboard.rows import read_records

    study = registry().get("studies", args.study)
    records = [r for r in read_records(args.out) if r["suite"] == study.name]
    if not records:
        raise PluginError(f"{args.out} holds no cell of suite '{study.name}': run it first (fedfuse run {study.name} --out {args.out})")
    rows, command = study_rows(records, registry()), f"fedfuse report {args.study} --out {args.out}"
    command += f" --into {args.into}" if args.into else f" --dest {args.dest}" if args.dest else ""  # the page's own
    if args.into:
        write_between_markers(Path(args.into), study.name, page(study, records, rows, command))
        print(f"wrote the {study.name} section of {args.into}")
        return 0
    folder = Path(args.dest or Path("docs") / "studies" / study.name)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(f"# {study.name}: {study.summary}\n\n" + page(study, records, rows, command, folder))
    print(f"wrote {folder / 'README.md'}")
    return 0
