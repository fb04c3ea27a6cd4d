"""``ml_sequences`` rows -> padded model arrays, training targets and a ``tf.data`` pipeline.

Pure numpy/pandas; tensorflow is imported inside :func:`make_dataset` only.

Inputs per (user, cutoff), left-padded to the sequence length ``L`` so the last position is always
the most recent event (``0`` = padding everywhere):

- ``cat``: the model's category index (:class:`Vocabulary`; out-of-vocabulary bucket ``V + 1``);
- ``etype``: event type index (``features.EVENT_TYPE_INDEX``);
- ``gaps``: ``[L, 2]`` floats: ``log1p`` hours from the event to the cutoff, and ``log1p`` hours
  since the previous event of the sequence (0 for the first one), both divided by ``GAP_SCALE``.

Training targets (every training signal of the sample, as EVALUATION.md advises):

- ``next``: at every position ``i < last``, the model index of the event ``i + 1`` of the same
  sequence (0 = no target); all of them lie before the cutoff.
- ``window``: at the last position, the categories of the label window ``[cutoff, cutoff + horizon)``
  (``label_idx`` padded with 0, ``window_weight`` 1 where the label window may be used for fitting,
  0 otherwise, e.g. no label events or a label window that crosses the fit's time limit).

Public API::

    Vocabulary.from_events(events, until_ts, min_count) / .from_categories(dim_categories, until_ts)
    Vocabulary.encode(category_idx) / .decode(model_idx) / .size / .oov_index / .n_outputs
    SequenceArrays                                        # dataclass of the arrays above
    encode_sequences(rows, vocab, sequence_length, with_labels=True) -> SequenceArrays
    make_dataset(arrays, batch_size, shuffle=False, seed=0, targets=True) -> tf.data.Dataset
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ml_tasks.contracts import PAD_INDEX

GAP_SCALE = 5.0  # log1p(hours) of ~6 days = 5


@dataclass(frozen=True)
class Vocabulary:
    """Global ``category_idx`` (dim_categories) -> model index ``1..V``; ``V + 1`` = out of vocabulary.

    ``categories[i - 1]`` is the global ``category_idx`` of model index ``i``.
    """

    categories: np.ndarray

    @classmethod
    def from_categories(cls, dim_categories: pd.DataFrame, until_ts: int | None = None) -> Vocabulary:
        """Categories first seen strictly before ``until_ts`` (all when ``None``), by category_idx."""
        dim = dim_categories
        if until_ts is not None:
            dim = dim[dim["first_event_ts"] < until_ts]
        return cls(np.sort(dim["category_idx"].to_numpy(dtype=np.int64)))

    @classmethod
    def from_events(cls, events: pd.DataFrame, until_ts: int, min_count: int = 1) -> Vocabulary:
        """Categories with at least ``min_count`` events strictly before ``until_ts``."""
        counts = events.loc[events["event_ts"] < until_ts, "category_idx"].value_counts()
        return cls(np.sort(counts[counts >= min_count].index.to_numpy(dtype=np.int64)))

    @property
    def size(self) -> int:
        return len(self.categories)

    @property
    def oov_index(self) -> int:
        return self.size + 1

    @property
    def n_outputs(self) -> int:
        """Width of the softmax: padding, ``V`` categories, the OOV bucket."""
        return self.size + 2

    def encode(self, category_idx: np.ndarray) -> np.ndarray:
        """Model indexes of global category indexes (0 stays 0; unknown -> OOV)."""
        category_idx = np.asarray(category_idx, dtype=np.int64)
        pos = np.searchsorted(self.categories, category_idx)
        if self.size == 0:
            found = np.zeros(category_idx.shape, dtype=bool)
            pos_c = pos
        else:
            pos_c = np.clip(pos, 0, self.size - 1)
            found = self.categories[pos_c] == category_idx
        out = np.where(found, pos_c + 1, self.oov_index)
        return np.where(category_idx == PAD_INDEX, PAD_INDEX, out).astype(np.int32)

    def decode(self, model_idx: np.ndarray) -> np.ndarray:
        """Global category indexes of model indexes ``1..V`` (others -> 0)."""
        model_idx = np.asarray(model_idx, dtype=np.int64)
        ok = (model_idx >= 1) & (model_idx <= self.size)
        return np.where(ok, self.categories[np.clip(model_idx - 1, 0, max(self.size - 1, 0))], 0)


@dataclass
class SequenceArrays:
    user_id: np.ndarray  # [n] object
    cutoff_ts: np.ndarray  # [n] int64
    cat: np.ndarray  # [n, L] int32
    etype: np.ndarray  # [n, L] int32
    gaps: np.ndarray  # [n, L, 2] float32
    next_target: np.ndarray  # [n, L] int32, 0 = none
    label_idx: np.ndarray  # [n, M] int32 model indexes of the label categories, 0 = padding
    window_weight: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # [n]

    def __len__(self) -> int:
        return len(self.cutoff_ts)

    def subset(self, mask_or_index: np.ndarray) -> SequenceArrays:
        return SequenceArrays(**{k: v[mask_or_index] for k, v in self.__dict__.items()})

    @staticmethod
    def concat(parts: list[SequenceArrays]) -> SequenceArrays:
        width = max(p.label_idx.shape[1] for p in parts)
        labels = [np.pad(p.label_idx, ((0, 0), (width - p.label_idx.shape[1], 0))) for p in parts]
        out = {
            k: np.concatenate([getattr(p, k) for p in parts]) for k in parts[0].__dict__ if k != "label_idx"
        }
        return SequenceArrays(label_idx=np.concatenate(labels), **out)

    def inputs(self) -> dict[str, np.ndarray]:
        return {"cat": self.cat, "etype": self.etype, "gaps": self.gaps}


def _left_pad(lists: pd.Series, length: int, dtype: type, transform=None) -> np.ndarray:
    out = np.zeros((len(lists), length), dtype=dtype)
    for i, seq in enumerate(lists):
        if seq is None:
            continue
        arr = np.asarray(seq, dtype=dtype)[-length:]
        if transform is not None:
            arr = transform(arr)
        if len(arr):
            out[i, length - len(arr) :] = arr
    return out


def encode_sequences(
    rows: pd.DataFrame, vocab: Vocabulary, sequence_length: int, with_labels: bool = True
) -> SequenceArrays:
    """Model arrays for ``ml_sequences`` rows (any subset); ``window_weight`` = has label events."""
    n, length = len(rows), sequence_length
    cat = vocab.encode(_left_pad(rows["seq_category_idx"], length, np.int64))
    etype = _left_pad(rows["seq_event_type_idx"], length, np.int32)
    gap = _left_pad(rows["seq_gap_hours"], length, np.float64)
    valid = cat > 0
    # hours since the previous event in the sequence: gap[i-1] - gap[i] (0 at the first event)
    prev = np.concatenate([gap[:, :1], gap[:, :-1]], axis=1)
    prev_valid = np.concatenate([np.zeros((n, 1), bool), valid[:, :-1]], axis=1)
    delta = np.where(prev_valid & valid, np.maximum(prev - gap, 0.0), 0.0)
    gaps = np.stack([np.log1p(np.maximum(gap, 0.0)), np.log1p(delta)], axis=-1) / GAP_SCALE
    gaps = np.where(valid[..., None], gaps, 0.0).astype(np.float32)
    next_target = np.zeros_like(cat)
    next_target[:, :-1] = np.where(valid[:, :-1], cat[:, 1:], 0)
    if with_labels and "label_category_idx" in rows:
        labels = rows["label_category_idx"]
        m = max(1, max((len(x) for x in labels if x is not None), default=1))
        label_idx = vocab.encode(_left_pad(labels, m, np.int64))
        has = (label_idx > 0).any(axis=1)
    else:
        label_idx = np.zeros((n, 1), np.int32)
        has = np.zeros(n, bool)
    return SequenceArrays(
        user_id=rows["user_id"].astype(str).to_numpy(dtype=object),
        cutoff_ts=rows["cutoff_ts"].to_numpy(dtype=np.int64),
        cat=cat,
        etype=etype,
        gaps=gaps,
        next_target=next_target,
        label_idx=label_idx.astype(np.int32),
        window_weight=has.astype(np.float32),
    )


def make_dataset(
    arrays: SequenceArrays,
    n_outputs: int,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    targets: bool = True,
    next_positions: int | None = None,
):
    """``tf.data`` pipeline: ``(inputs, {"next": int targets, "window": label distribution})``.

    ``next`` keeps the targets of the last ``next_positions`` positions (the model's ``next`` head
    covers those; overlapping sequences of consecutive cutoffs cover the earlier events).
    The dense next-window distribution (uniform over the label categories, zero when the sample has
    no usable label window) is built per batch inside the pipeline, so memory stays ``O(batch x V)``.
    """
    import tensorflow as tf

    inputs = arrays.inputs()
    if not targets:
        ds = tf.data.Dataset.from_tensor_slices(inputs)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    k = next_positions or arrays.next_target.shape[1]
    ds = tf.data.Dataset.from_tensor_slices(
        (inputs, arrays.next_target[:, -k:], arrays.label_idx, arrays.window_weight.astype(np.float32))
    )
    if shuffle:
        ds = ds.shuffle(min(len(arrays), 50_000), seed=seed, reshuffle_each_iteration=True)

    def to_targets(x, nxt, labels, weight):
        # labels are distinct per row; scatter them into a [batch, V] indicator (padding -> column 0)
        rows = tf.repeat(tf.range(tf.shape(labels)[0])[:, None], tf.shape(labels)[1], axis=1)
        idx = tf.stack([tf.reshape(rows, [-1]), tf.reshape(labels, [-1])], axis=1)
        shape = tf.stack([tf.shape(labels)[0], n_outputs])
        onehot = tf.minimum(tf.scatter_nd(idx, tf.ones(tf.shape(idx)[0]), shape), 1.0)
        onehot = tf.concat([tf.zeros_like(onehot[:, :1]), onehot[:, 1:]], axis=1)
        total = tf.reduce_sum(onehot, axis=1, keepdims=True)
        dist = tf.math.divide_no_nan(onehot, total) * weight[:, None]
        return x, {"next": nxt, "window": dist}

    return (
        ds.batch(batch_size)
        .map(to_targets, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )
