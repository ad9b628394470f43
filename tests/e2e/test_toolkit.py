"""The shared DDPM recipe: reproducible on the CPU, warm-up and EMA as documented, presets,
the [resources] table, and (marker ``gpu``) the same path on CUDA."""


def test_resources_table_and_flags(cli, tmp_path):
    from helpers import write_suite

    suite = write_suite(tmp_path / "s.toml", '[[protocols]]\nname = "fedavg"\n[resources]\naccelerator = "tpu"\n')
    done = cli("run", str(suite), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "[resources]: key 'accelerator' is 'tpu'" in done.stderr
    assert not (tmp_path / "out").exists()
    done = cli("run", str(suite), "--out", str(tmp_path / "out"), "--precision", "8-bit")
    assert done.returncode == 2 and "invalid choice: '8-bit'" in done.stderr
