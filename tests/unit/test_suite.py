import pytest
from helpers import write_suite

from fedfuse.bench.suites.expand import expand
from fedfuse.bench.suites.parse import load_suite, shipped_suites
from fedfuse.plugins.config import ConfigError
from fedfuse.plugins.manager import registry

FEDAVG = '[[protocols]]\nname = "fedavg"\nconfig = { local_steps = 2 }\n'


def test_shipped_smoke_expands_to_two_cells():
    suite = load_suite("smoke")
    cells = expand(suite, registry())
    assert "smoke" in shipped_suites()
    assert [c.seed for c in cells] == [0, 1]
    assert {c.protocol for c in cells} == {"fedavg"} and all(c.clients == 2 and c.rounds == 2 for c in cells)
    assert len({c.cell_id for c in cells}) == 2


def test_every_seed_study_has_three_tiers_of_the_same_matrix():
    shipped = shipped_suites()
    studies = [n for n in shipped if n.startswith("seed-") and not n.endswith(("-quick", "-gpu", "-tuning"))]
    assert len(studies) == 3
    for name in studies:
        tiers = {tier: expand(load_suite(name + tier), registry()) for tier in ("", "-quick", "-gpu")}
        labels = {tier: sorted({c.label for c in cells}) for tier, cells in tiers.items()}
        assert labels[""] == labels["-quick"] == labels["-gpu"], name  # the same configurations
        assert {c.protocol for c in tiers[""]} == {c.protocol for c in tiers["-quick"]}
        assert len({c.seed for c in tiers[""]}) == 3, name  # the reference tier pools 3 seeds
        assert all(c.evaluation["samples"] >= 1000 for c in tiers[""]), name
        assert "quality is not meaningful" in load_suite(name + "-quick").header.description
        assert all(c.dataset_args.get("size", 28) == 28 and c.dataset == "fashion-mnist" for c in tiers["-gpu"])
        # the GPU quick tier: some of the GPU tier's rows on its task, one seed (scripts/gpu_quick.sh)
        quick_gpu = expand(load_suite(name + "-gpu-quick"), registry())
        assert {c.label for c in quick_gpu} < {c.label for c in tiers["-gpu"]} and len({c.seed for c in quick_gpu}) == 1
        task = lambda cells: {(c.dataset, str(c.dataset_args), c.clients, str(c.profile)) for c in cells}  # noqa: E731
        assert task(quick_gpu) == task(tiers["-gpu"]), name
        if name + "-tuning" in shipped:  # tuned on seeds it does not report, at the study's budget
            tuning = expand(load_suite(name + "-tuning"), registry())
            assert not {c.seed for c in tuning} & {c.seed for c in tiers[""]}, name
            assert {(c.rounds, c.clients, c.evaluation["samples"]) for c in tuning} == \
                {(c.rounds, c.clients, c.evaluation["samples"]) for c in tiers[""]}, name


def test_cross_device_tiers_share_their_configurations_and_the_full_one_is_a_population():
    full, quick = (expand(load_suite(name), registry()) for name in ("cross-device", "cross-device-quick"))
    assert sorted(c.label for c in full if c.seed == 0) == sorted(c.label for c in quick)
    assert {c.protocol for c in full} == {"fedavg", "fedavg-lora", "ondemand-quant"}
    assert all(c.clients == 1000 and c.per_round == 100 and c.deadline_s == 60.0 for c in full)
    assert all(c.evaluation["samples"] >= 1000 for c in full) and len({c.seed for c in full}) == 3
    assert "quality is not meaningful" in load_suite("cross-device-quick").header.description


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
    line = path.read_text().splitlines().index("config = { local_step = 2 }") + 1  # the config line itself
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


def test_auto_feature_space_prefers_inception_for_user_folders_and_says_why():
    from fedfuse.bench.suites.expand import auto_space

    reg = registry()
    space, why = auto_space(reg.get("datasets", "mnist"))
    assert space == "featnet" and "shipped data" in why
    space, why = auto_space(reg.get("datasets", "image-folder"))  # the set-up script installs the weights
    assert space == "inception" and "user dataset" in why
    cells = expand(load_suite("smoke"), reg)
    assert cells[0].evaluation["feature_space"] == "featnet" and "feature_space_reason" in cells[0].evaluation


def test_the_digest_ignores_comments_and_description_but_not_the_study():
    from fedfuse.bench.suites.parse import study_digest

    text = load_suite("seed-ondemand-quant").text
    noted = text.replace('description = "', 'description = "measured: 2.1 h; ').replace("format = 1", "# note\nformat = 1")
    assert study_digest(noted) == study_digest(text)
    assert study_digest(text.replace("rounds = 20", "rounds = 21")) != study_digest(text)


@pytest.mark.parametrize("matrix,overrides,message", [
    ({"deadline_s": "nan"}, [], "matrix.deadline_s: nan is not a number"),
    ({"target": "{ fid = nan }"}, [], "matrix.target.fid: nan is not a number"),
    ({}, ["deadline_s=inf"], "matrix.deadline_s: inf is not a number"),
    ({}, ["seeds=[99999999999999999999]"], "seeds must be distinct, >= 0 and < 2**63"),
    ({"samples": "1000000000000"}, [], "1,000,000,000,000 samples of 1x8x8 images need about"),
])
def test_non_finite_and_absurd_values_are_one_line_and_write_nothing(tmp_path, capsys, matrix, overrides, message):
    from helpers import write_suite

    from fedfuse.bench.cli.main import main

    suite = write_suite(tmp_path / "s.toml", '[[protocols]]\nname = "fedavg"\n', **matrix)
    args = ["run", str(suite), "--out", str(tmp_path / "out")] + [a for o in overrides for a in ("--set", o)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()
