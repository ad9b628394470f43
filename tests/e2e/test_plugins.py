from helpers import write_suite


def test_a_misspelt_hook_names_the_likely_hook_and_leaves_the_rest_working(plugin_cli, tmp_path):
    """An installed plugin with `fedfuse_add_protocol`: reported and skipped, not fatal."""
    listed = plugin_cli("plugins")
    assert listed.returncode == 0, listed.stderr
    assert "typo" in listed.stdout and "did you mean 'fedfuse_add_protocols'?" in listed.stdout
    assert "fedfuse-fedavg" in listed.stdout and "fedfuse-fedavgm" in listed.stdout
    protocols = plugin_cli("list", "protocols")
    assert protocols.returncode == 0 and "fedavgm" in protocols.stdout and "plugin 'typo' was skipped" in protocols.stdout
    suite = write_suite(tmp_path / "s.toml", '[[protocols]]\nname = "nosuch"\n')
    missing = plugin_cli("run", str(suite), "--out", str(tmp_path / "out"))
    assert missing.returncode == 2 and "plugin 'typo' failed to load" in missing.stderr, missing.stderr
    assert not (tmp_path / "out").exists()
