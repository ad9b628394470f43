from dataclasses import dataclass, field
from typing import Literal

import pytest

from fedfuse.plugins.config import ConfigError, build_config


@dataclass
class Cfg:
    steps: int = 1
    lr: float = 0.1
    mode: Literal["a", "b"] = "a"
    widths: tuple[int, ...] = (8, 16)
    name: str | None = None
    tags: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError("'steps' must be >= 1")


def test_valid_values_are_coerced():
    cfg = build_config(Cfg, {"steps": 3, "lr": 1, "widths": [4, 8], "mode": "b"}, "here")
    assert cfg == Cfg(steps=3, lr=1.0, mode="b", widths=(4, 8))
    assert isinstance(cfg.lr, float) and isinstance(cfg.widths, tuple)


@pytest.mark.parametrize("values, expected", [
    ({"step": 3}, "here: unknown key 'step' (did you mean 'steps'?); allowed keys: steps (int), lr (float)"),
    ({"steps": "3"}, "here: key 'steps' must be int, got str '3'"),
    ({"steps": True}, "here: key 'steps' must be int, got bool True"),
    ({"lr": "fast"}, "here: key 'lr' must be float, got str 'fast'"),
    ({"mode": "c"}, "here: key 'mode' is 'c'; allowed values: 'a' | 'b'"),
    ({"widths": [4, "x"]}, "here: key 'widths'[1] must be int"),
    ({"widths": 4}, "here: key 'widths' must be a list, got int 4"),
    ({"steps": 0}, "here: 'steps' must be >= 1"),
])
def test_bad_values_name_the_key(values, expected):
    with pytest.raises(ConfigError) as err:
        build_config(Cfg, values, "here")
    assert str(err.value).startswith(expected)


def test_optional_accepts_none_and_the_type():
    assert build_config(Cfg, {"name": None}, "x").name is None
    assert build_config(Cfg, {"name": "n"}, "x").name == "n"
