"""What `fedfuse verify` compares, without running anything."""

from fedfuse.bench.engine.submission import choose, differences


def test_same_machine_is_bit_for_bit_and_another_within_the_tolerance():
    bundled = {"model_sha256": "ab", "fid": 20.0, "payload_up": 100, "messages": 4, "bytes_up": 1000, "bytes_down": 900}
    assert differences(bundled, dict(bundled), exact=True) == []
    nudged = {**bundled, "fid": 20.0 + 1e-9, "bytes_up": 1000 + 4 * 64}  # wire bytes: 64 B a message of slack
    assert differences(bundled, nudged, exact=True) == [f"fid is 20.0 in the bundle, {20.0 + 1e-9} when run again"]
    other = {**bundled, "model_sha256": "cd", "fid": 20.3}  # another machine: 2 % on figures, counts exact
    assert differences(bundled, other, exact=False) == []
    assert differences(bundled, {**other, "payload_up": 101}, exact=False) == ["payload_up is 100 in the bundle, 101 when run again"]
    assert differences(bundled, {**other, "fid": 21.0}, exact=False) == ["fid is 20.0 in the bundle, 21.0 when run again"]


def test_the_cells_run_again_are_a_seeded_choice():
    cells = [f"c{i}" for i in range(10)]
    assert choose(cells, 3, "bundle-a") == choose(cells, 3, "bundle-a") and len(choose(cells, 3, "bundle-a")) == 3
    assert choose(cells, 3, "bundle-a") != choose(cells, 3, "bundle-b") or choose(cells, 3, "bundle-c") != choose(cells, 3, "bundle-a")
    assert choose(cells, 20, "x") == cells and choose([], 2, "x") == []
