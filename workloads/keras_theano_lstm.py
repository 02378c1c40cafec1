"""Keras 2 on the Theano backend: the 2016 table's "keras (theano)" row, as a Keras user writes it.

Keras 2.3.1 is the last Keras that supports Theano. Its LSTM has the canonical layout (kernel [E,4H],
recurrent_kernel [H,4H], one bias [4H], gates i,f,c,o); on Theano it runs as a theano.scan.
One step is `model.train_on_batch` (forward, backward, SGD update; returns the pre-update loss).
Fixes to the 2016 script: random ids instead of IMDB, no `fit` timing (data handling and first-call
compilation are outside the timed loop), the classifier reads the last timestep.
Device set-up, flags, OOM matching, precision and sync are Theano's (workloads/theano_lstm.py).
Unlike the theano row, the batch is passed as NumPy arrays, so its host-to-device copy (32 KB of ids and labels at
the 2016 size) is inside the timed step: Keras 2's train_on_batch only accepts host data (it feeds Theano
placeholders), and feeding device tensors would mean compiling one model per batch; this is how the 2016 script ran.
Embedding update: dense (Theano's gradient of Keras' gather is a [vocab, E] array, updated whole by SGD).
"""

from __future__ import annotations

import collections
import collections.abc
import os
from typing import Any

import numpy as np

from workloads import harness
from workloads.theano_lstm import TheanoLSTM


def _import_keras() -> Any:
    os.environ["KERAS_BACKEND"] = "theano"
    # Keras 2.3.1 uses the collections ABC aliases that Python 3.10 removed (collections.Iterable, ...).
    for alias in ("Iterable", "Container", "Mapping", "Sequence"):
        if not hasattr(collections, alias):
            setattr(collections, alias, getattr(collections.abc, alias))
    import keras

    return keras


class KerasTheanoLSTM(TheanoLSTM):
    name = "keras-theano"
    embedding_update = "dense"

    def versions(self) -> dict[str, str | None]:
        out = super().versions()
        out["theano"] = out.pop("framework", None)
        if getattr(self, "keras", None) is not None:
            out["framework"] = self.keras.__version__
        return out

    def build(self, weights: harness.Weights) -> None:
        keras = self.keras = _import_keras()  # after check_device: Theano's flags must be set first
        p, layers = self.params, keras.layers
        tokens = layers.Input(shape=(p.seq_len,), dtype="int32")
        emb = layers.Embedding(p.vocab, p.embed, input_length=p.seq_len)
        lstm = layers.LSTM(p.hidden, activation="tanh", recurrent_activation="sigmoid")  # no hard_sigmoid
        dense = layers.Dense(p.classes, activation="softmax")
        self.model = keras.models.Model(tokens, dense(lstm(emb(tokens))))
        emb.set_weights([weights.embedding])
        lstm.set_weights([weights.kernel, weights.recurrent_kernel, weights.bias])
        dense.set_weights([weights.dense_kernel, weights.dense_bias])
        self.model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=p.lr, momentum=0.0),
            loss="sparse_categorical_crossentropy",  # batch mean
        )
        # Compile Theano's training function now, not inside the first probe step.
        self.model._make_train_function()

    def canonical_weights(self) -> harness.Weights:
        # Embedding, LSTM kernel, recurrent kernel, bias, Dense kernel, bias: Keras' order and layout are canonical.
        return harness.Weights(*(np.asarray(w, np.float32) for w in self.model.get_weights()))

    def prepare(self, tokens: np.ndarray, labels: np.ndarray) -> Any:
        return tokens, labels  # host arrays: see the module docstring

    def step(self, batch: Any) -> Any:
        return self.model.train_on_batch(*batch)

    def _synced_variables(self) -> list[Any]:
        return list(self.model.trainable_weights)

    def precision_readback(self) -> tuple[str, dict[str, Any]]:
        mode, switches = super().precision_readback()
        switches["keras_floatx"] = self.keras.backend.floatx()
        return (mode if switches["keras_floatx"] == "float32" else switches["keras_floatx"]), switches

    def param_count(self) -> int:
        return sum(int(np.prod(w.get_value(borrow=True).shape)) for w in self.model.trainable_weights)


if __name__ == "__main__":
    raise SystemExit(harness.run(KerasTheanoLSTM))
