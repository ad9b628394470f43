import types

import pytest

from fedfuse.plugins import ProtocolSpec, hookimpl
from fedfuse.plugins.manager import PluginError, Registry, new_plugin_manager, registry


def test_builtins_come_through_the_entry_point_group():
    reg = registry()
    names = dict(reg.plugins())
    assert {"fedfuse-fedavg", "fedfuse-datasets", "fedfuse-core"} <= set(names)
    assert "distribution fedfuse" in names["fedfuse-fedavg"]
    assert "fedavg" in reg.entries("protocols")
    assert {"iid", "dirichlet"} <= set(reg.entries("partitioners"))
    assert reg.entries("datasets")["digits"].spec.image_shape == (1, 8, 8)
    assert reg.entries("metrics")["eval_loss"].spec.higher_is_better is False


def test_a_misspelt_hook_fails_loudly():
    pm = new_plugin_manager(entry_points=False)
    plugin = types.ModuleType("typo_plugin")
    plugin.fedfuse_add_protocol = lambda: []  # missing 's', and no decorator: still caught
    pm.register(plugin, name="typo-plugin")
    with pytest.raises(Exception, match="fedfuse_add_protocol"):
        pm.check_pending()


def test_two_plugins_with_one_protocol_name_are_an_error_naming_both():
    pm = new_plugin_manager()
    clash = types.ModuleType("clash_plugin")

    @hookimpl
    def fedfuse_add_protocols():
        return [ProtocolSpec(name="fedavg", version="9", config=object, server=None, client_app=None)]

    clash.fedfuse_add_protocols = fedfuse_add_protocols
    pm.register(clash, name="clash-plugin")
    with pytest.raises(PluginError) as err:
        Registry(pm).entries("protocols")
    assert "protocol 'fedavg' is registered twice" in str(err.value)
    assert "'fedfuse-fedavg' (distribution fedfuse" in str(err.value) and "'clash-plugin'" in str(err.value)


def test_a_plugin_whose_hook_raises_is_skipped_and_named():
    pm = new_plugin_manager(entry_points=False)
    bad = types.ModuleType("raising_plugin")

    @hookimpl
    def fedfuse_add_protocols():
        raise RuntimeError("cannot find my weights")

    bad.fedfuse_add_protocols = fedfuse_add_protocols
    pm.register(bad, name="raising-plugin")
    reg = Registry(pm)
    assert reg.entries("protocols") == {}
    assert "cannot find my weights" in reg.broken["raising-plugin"]
    with pytest.raises(PluginError, match="plugin 'raising-plugin' failed to load"):
        reg.get("protocols", "mine")


def test_unknown_hooks_suggests_the_closest_name():
    from fedfuse.plugins.manager import unknown_hooks

    plugin = types.ModuleType("p")
    plugin.fedfuse_add_metric = lambda: []
    plugin.fedfuse_frobnicate = lambda: []
    message = unknown_hooks(plugin)
    assert "'fedfuse_add_metric' (did you mean 'fedfuse_add_metrics'?)" in message
    assert "unknown hook 'fedfuse_frobnicate'" in message


def test_show_protocol_prints_every_config_field_with_its_help(cli):
    shown = cli("show", "protocol", "split-diffusion")
    assert shown.returncode == 0, shown.stderr
    for text in ("cut_ratio", "0.4", "the server's share of the timeline", "warmup_steps", "images per optimizer step"):
        assert text in shown.stdout
    verbose = cli("list", "protocols", "-v")
    assert "fedavg: config" in verbose.stdout and "pretrain_steps" in verbose.stdout

