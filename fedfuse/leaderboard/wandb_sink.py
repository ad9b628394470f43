"""Publishing to Weights & Biases, as a plugin on ``fedfuse_publish``.

One W&B run per cell — its id is the cell's id, so publishing again updates the same runs
instead of adding new ones: config = the cell's full spec (protocol config, dataset, partition,
profiles, seed, versions), history = the rounds (``step = round``), summary = the final metrics,
and the sample grid as a ``wandb.Image``. One more run holds the ranked leaderboard as a
``wandb.Table``. Offline by default (``WANDB_MODE=offline``): runs land in ``<out>/wandb/`` and
``wandb sync <out>/wandb/offline-run-*`` uploads them later from a machine with network.
"""

from __future__ import annotations

import os
from pathlib import Path

from fedfuse.plugins import hookimpl

SCALARS = (int, float, str, bool)


def flat(record: dict, prefix: str = "") -> dict:
    """Nested dicts as 'a.b' keys (W&B charts scalars only)."""
    out = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        elif isinstance(value, SCALARS):
            out[f"{prefix}{key}"] = value
    return out


def publish_cell(wandb, record: dict, options: dict) -> None:
    config = {k: record[k] for k in ("suite", "suite_version", "label", "protocol", "protocol_version", "config",
                                     "dataset", "dataset_args", "partitioner", "profile", "hardware", "clients",
                                     "rounds_planned", "seed", "evaluation")}
    run = wandb.init(project=options["project"], entity=options.get("entity"), id=record["cell"], name=record["name"],
                     group=record["suite"], job_type=record["protocol"], config=config, resume="allow",
                     mode=options["mode"], dir=options["dir"], reinit="finish_previous")
    for rnd in record["rounds"]:
        run.log(flat({k: v for k, v in rnd.items() if k != "round"}), step=int(rnd["round"]))
    run.summary.update({**flat(record["metrics"]), "status": record["status"], "error": record["error"] or "",
                        "not_learned": not_learned(record["metrics"])})
    grid = Path(record["run_dir"]) / "samples.png"
    if grid.is_file():
        run.log({"samples": wandb.Image(str(grid))}, step=len(record["rounds"]))
    run.finish()


def not_learned(metrics: dict) -> bool:
    from fedfuse.leaderboard.ranking import NOT_LEARNED

    return metrics.get("fid_vs_noise", 0.0) > NOT_LEARNED


def board_table(wandb, rows):
    """The ranked rows (rank "2=" shared; "superseded" and "not learned" rows last), then each track's three
    reference rows, in one table."""
    from fedfuse.leaderboard.ranking import COSTS, PRIMARY, REFERENCES, mean_or_unbounded, reference_rows
    from fedfuse.leaderboard.render import PRIVACY

    columns = ["track", "rank", "configuration", "data", "profile", "n", "ranked_by", "ranked_value", PRIMARY,
               f"{PRIMARY}_std", "fid_vs_noise", "recall", "pop_fid", *PRIVACY, *COSTS, "pareto", "system"]
    table = wandb.Table(columns=columns)
    for r in rows:
        table.add_data(r.section, r.rank or ("" if r.place == "–" else r.place), r.shown_label, r.data, r.profile,
                       len(r.seeds), r.primary, r.mean(r.primary), r.mean(PRIMARY), r.std(PRIMARY),
                       r.mean("fid_vs_noise"), r.mean("recall"),
                       r.mean("pop_fid"), *(mean_or_unbounded(r, m) for m in PRIVACY), *(r.mean(c) for c in COSTS), ", ".join(r.pareto), "; ".join(r.systems))
    for track in dict.fromkeys(r.section for r in rows):
        for data, refs in reference_rows([r for r in rows if r.section == track]).items():
            for ref in REFERENCES:
                table.add_data(track, "reference", f"reference: {ref}", data, "", 0, "", None, refs[ref][0], 0.0,
                               refs[ref][0] / refs["noise"][0], refs[ref][1], None,
                               *([None] * (len(PRIVACY) + len(COSTS))),
                               "", "")
    return table


def publish_board(wandb, rows, options: dict) -> None:
    table = board_table(wandb, rows)
    run = wandb.init(project=options["project"], entity=options.get("entity"), id="fedfuse-leaderboard",
                     name="leaderboard", resume="allow", mode=options["mode"], dir=options["dir"],
                     reinit="finish_previous")
    run.log({"leaderboard": table})
    run.finish()


def wandb_in(folder: str):
    """The wandb module, quiet, with its (offline) run files going to ``folder``. Imported here,
    not at the top: publishing is optional and wandb is slow to import."""
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    Path(folder).mkdir(parents=True, exist_ok=True)
    return wandb


@hookimpl
def fedfuse_publish(results, target, options):
    if target != "wandb":
        return None
    wandb = wandb_in(options["dir"])
    for record in results:
        if record["status"] in ("ok", "failed"):
            publish_cell(wandb, record, options)
    publish_board(wandb, options.get("rows", []), options)
    return f"{len(results)} cell run(s) and the leaderboard to W&B ({options['mode']}) in {options['dir']}"


class LivePublisher:
    """``fedfuse run --wandb``: each cell is published as it finishes (an observer plugin)."""

    def __init__(self, store, options: dict):
        self.store, self.options = store, options

    @hookimpl
    def fedfuse_run_end(self, run, result):
        (record,) = self.store.records([run.cell.cell_id])
        publish_cell(wandb_in(self.options["dir"]), record, self.options)
