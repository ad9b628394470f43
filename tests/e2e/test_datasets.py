import pytest
from helpers import SETS, matching, write_suite

from fedfuse.datasets.loading import load


def test_data_show_prints_attribute_set_counts_and_overlaps(cli, celeba):
    done = cli("data", "show", "image-folder", "--data-arg", f"path={celeba['path']}", "--data-arg", "size=8",
               "--partitioner", "attribute-sets", "--clients", "3", "--arg", f"sets={SETS!r}".replace("'", '"'),
               "--arg", "max_per_client=5")
    assert done.returncode == 0, done.stderr
    assert "mean total-variation" in done.stdout  # the label table stays
    matches, _ = matching(load("image-folder", celeba))
    overlaps = matches.T.astype(int) @ matches.astype(int)
    for i, attrs in enumerate(SETS):
        row = next(ln for ln in done.stdout.splitlines() if f" {' & '.join(attrs)} " in ln)
        cells = [c.strip() for c in row.split("│") if c.strip()]
        assert cells[:3] == [str(i), " & ".join(attrs), str(matches[:, i].sum())]
        assert 0 < int(cells[3]) <= 5  # assigned, capped at 5
        assert cells[4:] == ["·" if i == j else str(overlaps[i, j]) for j in range(len(SETS))]
    assert overlaps[0, 1] > 0 and overlaps[1, 2] > 0 and overlaps[0, 2] == 0
    assert "match no set and belong to no client" in done.stdout
    bad = cli("data", "show", "image-folder", "--data-arg", f"path={celeba['path']}", "--partitioner",
              "attribute-sets", "--clients", "2", "--arg", 'sets=[["Smiling"]]')
    assert bad.returncode == 2 and "1 set(s) given for 2 clients" in bad.stderr


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
