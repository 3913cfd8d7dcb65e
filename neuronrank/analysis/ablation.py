"""Which neurons a role ablation zeroes: the Roles page's classes, layer bands, single neurons, and random
controls with the same number of neurons per layer. numpy only (the model side is prune/ablation.py, the
run is queue/kinds.py's ablate_job).

    CLASSES                             critical, important, moderate, prune-first, dead
    class_masks(frame, ...)             {class: [layers, width] bool}: scoring.roles with the Roles page's
                                        dead rule, so a dead neuron is in "dead" and in no TF/IDF cell
    parse_classes / parse_bands / parse_neurons     the flags' text, checked
    random_like(mask, seed, ...)        a control: per layer, as many neurons as `mask` has, drawn at random
    spread(values)                      mean and sample standard deviation of the controls' perplexities
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from neuronrank.analysis import scoring
from neuronrank.errors import UserError

CLASSES = (*scoring.ROLES, scoring.DEAD)  # the order every report uses
DEFAULT_QUANTILE = 0.9  # the Roles page's default: "high" = the top 10 % of the layer
NO_CLASS = "none"  # --classes none: single neurons only

_BAND = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")
_NEURON = re.compile(r"\s*(\d+)\s*:\s*(\d+)\s*")


def parse_classes(text) -> tuple[str, ...]:
    """"critical,dead" (or a list) -> the classes in CLASSES order, each once; "none" or "" -> ()."""
    items = list(text) if isinstance(text, (list, tuple)) else str(text or "").split(",")
    names = [str(c).strip().lower() for c in items if str(c).strip()]
    if names == [NO_CLASS]:
        return ()
    unknown = [c for c in names if c not in CLASSES]
    if unknown:
        raise UserError(f"unknown role class {unknown[0]!r}; choose from {', '.join(CLASSES)} (or none)",
                        field="classes")
    return tuple(c for c in CLASSES if c in names)


@dataclass(frozen=True)
class Band:
    """Decoder layers lo..hi, both included."""

    lo: int
    hi: int

    @property
    def text(self) -> str:
        return f"{self.lo}-{self.hi}"

    def layers(self) -> range:
        return range(self.lo, self.hi + 1)


def parse_bands(text, n_layers: int | None = None) -> tuple[Band, ...]:
    """"0-9,10-19" / "5" (or a list of such) -> bands in the order given; None or "" -> (). With
    `n_layers`, each band must lie inside the model."""
    if text is None:
        return ()
    items = list(text) if isinstance(text, (list, tuple)) else [str(text)]
    parts = [p for item in items for p in str(item).split(",") if p.strip()]
    bands = []
    for p in parts:
        m = _BAND.fullmatch(p)
        if m is None:
            raise UserError(f"layer band {p.strip()!r}: write A-B (layers A to B, both included) or one layer A",
                            field="layers")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if lo > hi:
            raise UserError(f"layer band {lo}-{hi} is reversed: write A-B with A <= B", field="layers")
        if n_layers is not None and hi >= n_layers:
            raise UserError(f"layer band {lo}-{hi}: the model has layers 0-{n_layers - 1}", field="layers")
        bands.append(Band(lo, hi))
    if len(set(bands)) != len(bands):
        raise UserError("a layer band is given twice", field="layers")
    return tuple(bands)


def parse_neurons(text, n_layers: int | None = None, width: int | None = None) -> tuple[tuple[int, int], ...]:
    """"3:17,10:5" -> ((3, 17), (10, 5)) in the order given, each once; None or "" -> ()."""
    if text is None:
        return ()
    items = list(text) if isinstance(text, (list, tuple)) else str(text).split(",")
    out = []
    for p in (str(i) for i in items if str(i).strip()):
        m = _NEURON.fullmatch(p)
        if m is None:
            raise UserError(f"neuron {p.strip()!r}: write LAYER:NEURON, e.g. 3:17", field="neurons")
        layer, neuron = int(m.group(1)), int(m.group(2))
        if n_layers is not None and layer >= n_layers:
            raise UserError(f"neuron {layer}:{neuron}: the model has layers 0-{n_layers - 1}", field="neurons")
        if width is not None and neuron >= width:
            raise UserError(f"neuron {layer}:{neuron}: layer {layer} has neurons 0-{width - 1}", field="neurons")
        if (layer, neuron) not in out:
            out.append((layer, neuron))
    return tuple(out)


def class_masks(frame, classes=CLASSES, quantile: float | None = None, tf_threshold: float | None = None,
                idf_threshold: float | None = None) -> dict[str, np.ndarray]:
    """{class: [layers, width] bool mask} for the stats table `frame` (layer-major, equal widths), by the
    Roles page's rule: `scoring.roles` with per-layer `quantile` thresholds (or global ones) and the dead
    class on (active on fewer than scoring.DEAD_BELOW of the layer's tokens), so the four TF/IDF classes
    hold no dead neuron."""
    if tf_threshold is None and idf_threshold is None and quantile is None:
        quantile = DEFAULT_QUANTILE
    labels, counts = scoring.roles(frame, tf_threshold, idf_threshold, quantile=quantile,
                                   dead_below=scoring.DEAD_BELOW)
    n_layers = len(counts) - 1  # the 'all' row
    grid = np.asarray(labels).reshape(n_layers, -1)
    return {c: grid == c for c in classes}


def in_band(mask: np.ndarray, band: Band | None) -> np.ndarray:
    """`mask` with every layer outside `band` cleared (None: all layers)."""
    if band is None:
        return mask.copy()
    out = np.zeros_like(mask)
    out[band.lo:band.hi + 1] = mask[band.lo:band.hi + 1]
    return out


def control_seed(seed: int, cls: str, band: Band | None, r: int) -> np.random.SeedSequence:
    """The seed of control `r` of `cls` in `band`: fixed by these alone, so adding a class or a band never
    changes another's controls."""
    lo, hi = (band.lo, band.hi) if band is not None else (0, 2**31 - 1)
    return np.random.SeedSequence([int(seed), CLASSES.index(cls) if cls in CLASSES else len(CLASSES), lo, hi, r])


def random_like(mask: np.ndarray, seed) -> np.ndarray:
    """A random [layers, width] mask with, in every layer, as many neurons as `mask` has there, drawn
    uniformly without replacement from all of the layer's neurons. `seed`: an int or a SeedSequence."""
    rng = np.random.default_rng(seed)
    out = np.zeros_like(mask, dtype=bool)
    width = mask.shape[1]
    for layer, k in enumerate(mask.sum(axis=1)):
        if k:
            out[layer, rng.choice(width, size=int(k), replace=False)] = True
    return out


def neuron_index(mask: np.ndarray) -> dict[int, np.ndarray]:
    """{layer: sorted neuron indices} of the layers `mask` touches."""
    return {int(layer): np.flatnonzero(row) for layer, row in enumerate(mask) if row.any()}


def spread(values) -> tuple[float | None, float | None]:
    """(mean, sample standard deviation) of the controls' perplexities; None where undefined (no values;
    one value has no spread). A diverged control (inf) makes the mean inf and the spread undefined."""
    v = np.asarray([math.inf if x is None else x for x in values], dtype=np.float64)
    if v.size == 0:
        return None, None
    if not np.isfinite(v).all():
        return math.inf, None
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else None)
