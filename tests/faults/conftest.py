"""Fixtures and helpers of the fault suites: a small statistics request, a long text, a cache of its own,
the one-error-line check of the CLI's contract."""

import time
from pathlib import Path

import pytest

from neuronrank.cli import main
from neuronrank.config.requests import StatsRequest
from neuronrank.data.paths import cache_dir

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def req(tiny_dir, text_file):
    return StatsRequest(model=str(tiny_dir), calib=f"file:{text_file}", nsamples=4, seqlen=16, seed=3,
                        batch_size=2, topk=4)


@pytest.fixture(scope="module")
def long_text(tmp_path_factory, text_file):
    """~260k tokens of distinct documents: long enough for runs that must still be going when killed."""
    base = text_file.read_text()
    path = tmp_path_factory.mktemp("long") / "long.txt"
    path.write_text("\n\n".join(f"Part {i}. {base}" for i in range(1000)))
    return path


def token_files():
    return sorted((cache_dir() / "tokens").glob("*.npy"))


def one_error_line(capsys, argv, needle, code=2):
    assert main(argv) == code
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error:"), err
    assert needle in err[0], err[0]
    return err[0]


def wait_for(pred, timeout=120, what="condition"):
    t = time.time()
    while time.time() - t < timeout:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A cache of its own (dispatcher log and lock), the shared converted models linked in."""
    root = tmp_path / "cache"
    root.mkdir()
    (root / "models").symlink_to(REPO / "cache" / "models", target_is_directory=True)
    monkeypatch.setenv("NEURONRANK_CACHE", str(root))
    return root


def dispatcher_starts(root: Path) -> int:
    log = root / "logs" / "dispatcher.log"
    return sum(" dispatcher " in line and "slot(s)" in line for line in log.read_text().splitlines()) \
        if log.exists() else 0


def lock_free(root: Path) -> bool:
    import fcntl

    with open(root / "dispatcher.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True


@pytest.fixture
def no_model_load(monkeypatch):
    from neuronrank.engine import models

    def boom(*a, **k):
        raise AssertionError("the model was loaded before the output target was checked")

    monkeypatch.setattr(models, "load", boom)
