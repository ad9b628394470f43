"""Bad input: one line on stderr, exit code 2, nothing written (in process: none of these starts one)."""

import pytest
from helpers import write_suite


@pytest.mark.parametrize("protocols, extra, message", [
    ('[[protocols]]\nname = "fedavg"\nconfig = { lr_rate = 0.1 }\n', [], "unknown key 'lr_rate'; allowed keys: model (str)"),
    ('[[protocols]]\nname = "fedavg"\nlabel = "a"\n\nconfig = { local_step = 3 }\n', [],
     "suite.toml:15 protocols[0] ('fedavg') config: unknown key 'local_step' (did you mean 'local_steps'?)"),
    ('[[protocols]]\nname = "fedavg"\nconfig = { local_steps = "ten" }\n', [], "key 'local_steps' must be int, got str 'ten'"),
    ('[[protocols]]\nname = "fedavgg"\n', [], "unknown protocol 'fedavgg'; available: centralized, fedavg, "),
    ('[[protocols]]\nname = "fedavg"\n', ["--set", "fedavg.local_steps=many"], "key 'local_steps' must be int, got str 'many'"),
    ('[[protocols]]\nname = "fedavg"\n', ["--only", "nothing-matches"], "--only 'nothing-matches' matches no cell"),
    ('[[protocols]]\nname = "fedavg"\n', ["--backend", "deployment"], "--backend deployment needs --superlink HOST:PORT"),
    ('[[protocols]]\nname = "fedavg"\n', ["--backend", "deployment", "--superlink", "127.0.0.1:9"],
     "give the SuperLink's CA with --root-certificates PATH, or say --insecure"),
    ('[[protocols]]\nname = "fedavg"\n', ["--insecure"], "--insecure only apply to --backend deployment"),
])
def test_config_errors_exit_2_with_one_line_and_write_nothing(cli, tmp_path, protocols, extra, message):
    suite = write_suite(tmp_path / "suite.toml", protocols)
    out = tmp_path / "out"
    done = cli("run", str(suite), "--out", str(out), *extra)
    assert done.returncode == 2
    assert done.stderr.startswith("fedfuse: error: ") and message in done.stderr
    assert done.stderr.strip().count("\n") == 0
    assert not out.exists()


def test_unknown_suite_and_missing_results(cli, tmp_path):
    done = cli("run", "no-such-suite")
    assert done.returncode == 2 and "no shipped suite of that name; shipped suites: " in done.stderr
    assert "smoke" in done.stderr
    done = cli("results", "--out", str(tmp_path / "empty"))
    assert done.returncode == 2 and "run a suite first" in done.stderr


def test_list_and_plugins(cli):
    done = cli("list", "protocols")
    assert done.returncode == 0 and "fedavg" in done.stdout and "fedfuse-fedavg" in done.stdout
    done = cli("list", "suites")
    assert "smoke" in done.stdout
    assert "fedfuse-datasets" in cli("plugins").stdout


def test_data_show_prints_the_partition_and_plots(cli, tmp_path):
    png = tmp_path / "heat.png"
    done = cli("data", "show", "digits", "--partitioner", "dirichlet", "--clients", "3", "--arg", "alpha=0.3",
               "--plot", str(png))
    assert done.returncode == 0, done.stderr
    assert "dirichlet(alpha=0.3,min_partition_size=10)" in done.stdout and "mean total-variation" in done.stdout
    assert png.read_bytes()[:4] == b"\x89PNG"
    bad = cli("data", "show", "digits", "--arg", "alpha=0.3")
    assert bad.returncode == 2 and "unknown argument 'alpha'; allowed: max_per_client" in bad.stderr
    missing = cli("data", "show", "image-folder", "--data-arg", f"path={tmp_path / 'nowhere'}")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    unsplittable = cli("data", "show", "digits", "--partitioner", "dirichlet", "--clients", "100", "--arg", "alpha=0.5",
                       "--arg", "min_partition_size=5", "--data-arg", "public_fraction=0.2")
    assert unsplittable.returncode == 2 and "dirichlet over 100 clients: cannot be built: ValueError" in unsplittable.stderr
    assert "Traceback" not in unsplittable.stderr


def test_a_ray_cluster_is_joined_with_its_own_resources_and_only_in_simulation(cli, tmp_path, monkeypatch):
    """--ray-address (or RAY_ADDRESS): Flower gets no local CPU or GPU counts, which Ray refuses
    when joining a cluster; a deployment has no Ray to join. (The two-node run:
    e2e/test_ray_cluster.py, `-m long`.)"""
    from fedfuse.bench.engine.simulation import backend_config
    from fedfuse.toolkit.device import Resources

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert backend_config(Resources()) == {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                           "init_args": {"num_cpus": 8, "num_gpus": 0, "logging_level": "error",
                                                         "log_to_driver": False}}
    assert backend_config(Resources(cpus_per_client=16))["client_resources"]["num_cpus"] == 8  # no more than here
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    config = backend_config(Resources(cpus_per_client=2))
    assert config["init_args"] == {} and config["client_resources"] == {"num_cpus": 2, "num_gpus": 0.0}
    done = cli("run", "smoke", "--out", str(tmp_path / "out"), "--backend", "deployment", "--superlink", "h:1",
               "--insecure", "--ray-address", "10.0.0.1:6379")
    assert done.returncode == 2 and "--ray-address applies to --backend simulation" in done.stderr
    assert not (tmp_path / "out").exists()
