import pytest

from conftest import write_suite
from fedfuse.bench.config import ConfigError
from fedfuse.bench.suite import expand, load_suite, shipped_suites
from fedfuse.plugins.manager import registry

FEDAVG = '[[protocols]]\nname = "fedavg"\nconfig = { local_steps = 2 }\n'


def test_shipped_smoke_expands_to_two_cells():
    suite = load_suite("smoke")
    cells = expand(suite, registry())
    assert "smoke" in shipped_suites()
    assert [c.seed for c in cells] == [0, 1]
    assert {c.protocol for c in cells} == {"fedavg"} and all(c.clients == 2 and c.rounds == 2 for c in cells)
    assert len({c.cell_id for c in cells}) == 2


def test_matrix_is_the_product(tmp_path):
    path = write_suite(tmp_path / "s.toml", FEDAVG + '[[protocols]]\nname = "fedavg"\nlabel = "fedavg-wide"\n'
                       'config = { model = "small" }\n', partitioners='["iid", { name = "dirichlet", alpha = 0.1 }]')
    suite = load_suite(str(path), ["seeds=[0, 1, 2]"])
    cells = expand(suite, registry())
    assert len(cells) == 2 * 2 * 3
    dirichlet = [c for c in cells if c.partitioner == "dirichlet"]
    assert dirichlet[0].partitioner_args == {"alpha": 0.1, "min_partition_size": 10}
    assert {c.label for c in cells} == {"fedavg", "fedavg-wide"}


def test_cell_ids_are_stable_and_config_sensitive(tmp_path):
    path = write_suite(tmp_path / "s.toml", FEDAVG)
    first = expand(load_suite(str(path)), registry())[0]
    again = expand(load_suite(str(path)), registry())[0]
    changed = expand(load_suite(str(path), ["fedavg.lr=0.01"]), registry())[0]
    assert first.cell_id == again.cell_id
    assert changed.cell_id != first.cell_id and changed.config["lr"] == 0.01


def test_unknown_config_key_names_file_line_and_allowed_keys(tmp_path):
    path = write_suite(tmp_path / "s.toml", '[[protocols]]\nname = "fedavg"\nconfig = { local_step = 2 }\n')
    with pytest.raises(ConfigError) as err:
        expand(load_suite(str(path)), registry())
    line = path.read_text().splitlines().index("[[protocols]]") + 1
    assert f"s.toml:{line} protocols[0] ('fedavg') config: unknown key 'local_step'" in str(err.value)
    assert "local_steps (int)" in str(err.value)


@pytest.mark.parametrize("override, message", [
    ("fedavg.lr=fast", "key 'lr' must be float, got str 'fast'"),
    ("nosuch=1", "--set nosuch=1: unknown key 'nosuch'"),
    ("rounds=0", "clients and rounds must be >= 1"),
    ("justtext", "--set justtext: expected KEY=VALUE"),
])
def test_bad_overrides(tmp_path, override, message):
    path = write_suite(tmp_path / "s.toml", FEDAVG)
    with pytest.raises(ConfigError) as err:
        expand(load_suite(str(path), [override]), registry())
    assert message in str(err.value)


def test_unknown_names_list_what_exists(tmp_path):
    path = write_suite(tmp_path / "s.toml", '[[protocols]]\nname = "nope"\n')
    with pytest.raises(ConfigError, match=r"unknown protocol 'nope'; available: .*fedavg"):
        expand(load_suite(str(path)), registry())
    path = write_suite(tmp_path / "s.toml", FEDAVG, partitioners='[{ name = "iid", alpha = 1 }]')
    with pytest.raises(ConfigError, match="partitioner 'iid' has no argument 'alpha'"):
        expand(load_suite(str(path)), registry())


def test_file_level_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("format = 1\n[suite\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_suite(str(bad))
    bad.write_text('format = 2\n[suite]\nname = "x"\nversion = "1"\n')
    with pytest.raises(ConfigError, match="bad.toml:1: 'format' must be 1, got 2"):
        load_suite(str(bad))
    with pytest.raises(ConfigError, match="no suite file 'missing' and no shipped suite"):
        load_suite("missing")
