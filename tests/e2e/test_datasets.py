import pytest
from helpers import SETS, write_suite


@pytest.mark.slow
def test_an_attribute_sets_cell_runs_end_to_end(cli, celeba):
    """A CelebA-layout folder split by attribute sets runs as a CollaFuse cell (Flower
    simulation), both sides' models conditioned on an attribute, as the paper's; the per-set
    counts are stored with the cell's partition summary. (eval_fraction = 0.3: the
    recall/coverage scores need more held-out images than their 5 nearest neighbours.)"""
    protocols = ('[[protocols]]\nname = "split-diffusion"\n'
                 'config = { model = "tiny", client_model = "tiny", cut_ratio = 0.6, local_steps = 2, batch_size = 4, '
                 'timesteps = 20, warmup_steps = 0, condition = "Wearing_Earrings" }\n')
    partitioner = f'[{{ name = "attribute-sets", sets = {SETS!r}, max_per_client = 6 }}]'.replace("'", '"')
    dataset = f'[{{ name = "image-folder", path = "{celeba["path"]}", size = 8, label = "Smiling", eval_fraction = 0.3 }}]'
    suite = write_suite(cli.cwd / "s.toml", protocols, datasets=dataset, partitioners=partitioner, clients="3",
                        samples="16", sample_steps="2", feature_space='"featnet"')
    done = cli("run", str(suite), "--out", str(cli.cwd / "out"))
    assert done.returncode == 0, done.stderr[-3000:]
    (record,) = cli.results(cli.cwd / "out")
    assert record["status"] == "ok" and record["partitioner"].startswith("attribute-sets(max_per_client=6,")
    summary = record["partition_summary"]
    assert summary["sizes"] == summary["sets"]["assigned"] and max(summary["sizes"]) <= 6
    assert summary["sets"]["sets"] == SETS and summary["sets"]["overlaps"][0][2] == 0
    metrics = record["metrics"]  # the server received each image's attribute with it
    assert metrics["disclosed_conditions"] == 2 * 4 and metrics["fid"] > 0
