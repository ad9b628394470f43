"""`fedfuse list`, `show`, `plugins`, `data` and `check`: what the plugins provide, and whether a protocol keeps the contract."""

from __future__ import annotations

from rich.table import Table

from fedfuse.bench.cli.common import console
from fedfuse.plugins.config import ConfigError
from fedfuse.plugins.manager import registry


def cmd_list(args) -> int:
    if args.what == "suites":
        return _list_suites()
    reg = registry()
    table = Table(title=f"fedfuse {args.what}")
    columns = {"protocols": ("version", "summary"), "datasets": ("image_shape", "num_classes", "license", "source", "summary"),
               "partitioners": ("args", "summary"), "metrics": ("unit", "higher_is_better", "aggregate"),
               "profiles": ("kind", "figures", "description"), "studies": ("protocol", "summary")}[args.what]
    for header in ("name", *columns, "plugin"):
        table.add_column(header)
    entries = sorted(reg.entries(args.what).items(), key=lambda kv: (getattr(kv[1].spec, "kind", ""), kv[0]))
    for name, entry in entries:
        table.add_row(name, *(_field(entry.spec, c) for c in columns), entry.plugin)
    console().print(table)
    if args.verbose and args.what == "protocols":
        for name, entry in entries:
            console().print(config_table(name, entry.spec))
    warn_broken(reg)
    return 0


def cmd_show(args) -> int:
    """One protocol: what it is, where it comes from, and every config field."""
    reg = registry()
    spec = reg.get("protocols", args.name)
    plugin = reg.entries("protocols")[args.name].plugin
    console().print(f"[bold]{spec.name}[/bold] v{spec.version} — {spec.summary}\nplugin: {plugin}\n"
                    f"server loop: {spec.server}\nClientApp: {spec.client_app}\n"
                    f"DP levels (a suite entry's dp table; docs/privacy.md): {', '.join(spec.dp) or 'none'}")
    console().print(config_table(args.name, spec))
    return 0


def config_table(name: str, spec) -> Table:
    from fedfuse.plugins.config import field_docs

    table = Table(title=f"{name}: config = {{ ... }} keys")
    for header in ("key", "type", "default", "help"):
        table.add_column(header)
    for doc in field_docs(spec.config):
        table.add_row(doc.name, doc.type, repr(doc.default), doc.help)
    return table


def warn_broken(reg) -> None:
    for name, why in reg.broken.items():
        console().print(f"[yellow]plugin '{name}' was skipped: it failed to load {why}[/yellow]")


def cmd_check(args) -> int:
    """Run a protocol on a tiny cell (conformance.py says how) and report the plugin contract, rule by rule."""
    import json

    from fedfuse.bench.engine.conformance import check
    from fedfuse.bench.suites.parse import parse_value

    if bad := [pair for pair in args.set + args.data_arg if "=" not in pair]:
        raise ConfigError(f"--set {bad[0]}: expected KEY=VALUE")
    config = {key: parse_value(value) for key, value in (pair.split("=", 1) for pair in args.set)}
    data = {key: parse_value(value) for key, value in (pair.split("=", 1) for pair in args.data_arg)}
    what = f"digits, {args.clients} clients, {args.rounds} rounds"
    with console().status(f"running {args.name} on a tiny cell, fresh, warm and with a failing client ({what}; a minute or two)"):
        report = check(args.name, config, out=args.keep, dataset_args=data, rounds=args.rounds, clients=args.clients)
    if args.format == "json":
        print(json.dumps(report, indent=1))
    else:
        table = Table(title=f"fedfuse check protocol {args.name}")
        for header in ("rule", "", "seen"):
            table.add_column(header)
        for r in report["rules"]:
            table.add_row(r["rule"], "[green]ok[/green]" if r["ok"] else "[red]FAIL[/red]", r["seen"])
        console().print(table)
    return 0 if report["ok"] else 1


def _field(spec, column: str) -> str:
    if column == "figures":
        from fedfuse.bench.costs.hardware import key_figures

        return key_figures(spec)
    return str(getattr(spec, column))


def _list_suites() -> int:
    import tomllib

    from fedfuse.bench.suites.parse import shipped_suites

    table = Table(title="fedfuse suites (shipped)")
    for header in ("name", "version", "description", "path"):
        table.add_column(header)
    for name, path in sorted(shipped_suites().items()):
        header = tomllib.loads(path.read_text()).get("suite", {})
        table.add_row(name, str(header.get("version", "")), header.get("description", ""), str(path))
    console().print(table)
    return 0


def cmd_plugins(args) -> int:
    table = Table(title="fedfuse plugins")
    table.add_column("plugin")
    table.add_column("source")
    reg = registry()
    for name, source in reg.plugins():
        table.add_row(name, source)
    for name, why in reg.broken.items():
        table.add_row(f"[red]{name}[/red]", f"[red]skipped: failed to load {why}[/red]")
    console().print(table)
    return 0


def cmd_data(args) -> int:
    from fedfuse.bench.cli.datashow import show_partition

    show_partition(args, console())
    return 0
