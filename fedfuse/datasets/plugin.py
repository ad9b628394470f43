"""The built-in datasets and partitioners, registered as a plugin like any other."""

from fedfuse.datasets.partition import PARTITIONERS
from fedfuse.plugins import DatasetSpec, hookimpl


def _digits():
    from fedfuse.datasets.digits import load_digits

    return load_digits()


@hookimpl
def fedfuse_add_datasets():
    return [
        DatasetSpec(
            name="digits", version="1", load=_digits, image_shape=(1, 8, 8), num_classes=10,
            license="CC BY 4.0 (UCI ML hand-written digits)", source="scikit-learn (sklearn.datasets.load_digits)",
            summary="1,797 8x8 grey digits; ~300 held out for evaluation. For the fastest tests.",
        )
    ]


@hookimpl
def fedfuse_add_partitioners():
    return list(PARTITIONERS)
