import pytest
from helpers import SETS, expect_exit, plain_run


@pytest.mark.slow
def test_an_attribute_sets_cell_runs_end_to_end(cli, shared_run):
    """A CelebA-layout folder split by attribute sets runs as a CollaFuse cell (Flower
    simulation), both sides' models conditioned on an attribute, as the paper's; the per-set
    counts are stored with the cell's partition summary (the shared run helpers.ATTRIBUTE_CELL)."""
    out = plain_run(shared_run, "attributes")
    expect_exit(out, "0")
    (record,) = cli.results(out)
    assert record["status"] == "ok" and record["partitioner"].startswith("attribute-sets(max_per_client=6,")
    summary = record["partition_summary"]
    assert summary["sizes"] == summary["sets"]["assigned"] and max(summary["sizes"]) <= 6
    assert summary["sets"]["sets"] == SETS and summary["sets"]["overlaps"][0][2] == 0
    metrics = record["metrics"]  # the server received each image's attribute with it
    assert metrics["disclosed_conditions"] == 2 * 4 and metrics["fid"] > 0
