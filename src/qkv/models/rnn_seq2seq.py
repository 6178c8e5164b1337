"""RNN encoder-decoder with additive attention (Bahdanau et al., 2015) and its no-attention baseline.

Notation: B batch, S source length, L target length, E embedding size, Hd RNN state size,
N stacked layers, V target vocabulary, A attention size.

The encoder is a bidirectional GRU/LSTM whose annotations ``h_j = [h_j_fwd; h_j_bwd]`` are
``(B, S, 2 Hd)``. The decoder is unrolled one step at a time: at step i it attends from its previous
state ``s_{i-1}`` to all ``h_j`` (``c_i = sum_j alpha_ij h_j``), reads ``[y_{i-1}; c_i]``, and predicts
``y_i`` from ``[s_i; c_i; y_{i-1}]``. Without attention (``attention=False``) ``c_i`` is the same fixed
vector at every step: the final encoder state ``[h_S_fwd; h_1_bwd]`` (the RNN encoder-decoder of
Cho et al.), so quality can be compared across sentence lengths.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from qkv.models.config import RNNSeq2SeqConfig
from qkv.modules.additive import AdditiveAttention
from qkv.modules.embeddings import check_ids

__all__ = ["RNNSeq2Seq", "RNNState"]


@dataclass
class RNNState:
    """Everything a decoder step needs; batch-first except the RNN state itself.

    Attributes:
        hidden: decoder state ``(N, B, Hd)``.
        cell: LSTM cell state ``(N, B, Hd)``, or None for a GRU.
        memory: encoder annotations ``(B, S, 2 Hd)``.
        keys_proj: ``U h`` of the additive attention ``(B, S, A)`` (computed once), or None.
        src_mask: ``(B, S)`` bool, True = real source token.
        context: the fixed context vector ``(B, 2 Hd)`` (used without attention).
    """

    hidden: torch.Tensor
    cell: torch.Tensor | None
    memory: torch.Tensor
    keys_proj: torch.Tensor | None
    src_mask: torch.Tensor
    context: torch.Tensor

    def select(self, index: torch.Tensor) -> RNNState:
        """Rows ``index (B',)`` of the batch (beam search reordering/expansion)."""
        return RNNState(
            hidden=self.hidden[:, index],
            cell=None if self.cell is None else self.cell[:, index],
            memory=self.memory[index],
            keys_proj=None if self.keys_proj is None else self.keys_proj[index],
            src_mask=self.src_mask[index],
            context=self.context[index],
        )


class RNNSeq2Seq(nn.Module):
    """Bidirectional RNN encoder + (attentive) RNN decoder.

    Args:
        config: an :class:`RNNSeq2SeqConfig`.
    """

    def __init__(self, config: RNNSeq2SeqConfig) -> None:
        super().__init__()
        self.config = cfg = config
        Hd, E, N = cfg.hidden_size, cfg.embed_dim, cfg.num_layers
        rnn = nn.GRU if cfg.cell == "gru" else nn.LSTM
        inner_dropout = cfg.dropout if N > 1 else 0.0
        self.src_embed = nn.Embedding(cfg.src_vocab_size, E, padding_idx=cfg.pad_id)
        self.tgt_embed = nn.Embedding(cfg.tgt_vocab_size, E, padding_idx=cfg.pad_id)
        self.encoder = rnn(E, Hd, N, batch_first=True, bidirectional=True, dropout=inner_dropout)
        self.init_state = nn.Linear(2 * Hd, Hd)  # s_0 = tanh(W [h_fwd; h_bwd]) per layer
        self.decoder = rnn(E + 2 * Hd, Hd, N, batch_first=True, dropout=inner_dropout)
        self.attention = AdditiveAttention(Hd, 2 * Hd, cfg.attention_dim) if cfg.attention else None
        self.out = nn.Linear(Hd + 2 * Hd + E, cfg.tgt_vocab_size)
        self.dropout = nn.Dropout(cfg.dropout)

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> RNNState:
        """Run the encoder and build the decoder's initial state.

        Args:
            src: ``(B, S)`` token ids.
            src_mask: ``(B, S)`` bool, True = real token (real tokens first); default ``src != pad_id``.

        Returns:
            the initial :class:`RNNState`.
        """
        if src.dim() != 2:
            raise ValueError(f"src must have shape (B, S), got {tuple(src.shape)}")
        check_ids("src", src, self.config.src_vocab_size)
        B, S = src.shape
        src_mask = src != self.config.pad_id if src_mask is None else src_mask
        if src_mask.dtype != torch.bool or src_mask.shape != (B, S):
            raise ValueError(f"src_mask must be bool (B, S) = {(B, S)}, got {src_mask.dtype} {tuple(src_mask.shape)}")
        lengths = src_mask.sum(dim=1)
        if bool((lengths == 0).any()):
            raise ValueError(f"every source needs at least one real token, got lengths {lengths.tolist()}")
        emb = self.dropout(self.src_embed(src))  # (B, S, E)
        packed = pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, final = self.encoder(packed)
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=S)  # (B, S, 2 Hd)
        h_n = final[0] if isinstance(final, tuple) else final  # (2 N, B, Hd)
        N, Hd = self.config.num_layers, self.config.hidden_size
        h_n = h_n.view(N, 2, B, Hd)  # (N, directions, B, Hd)
        summary = torch.cat([h_n[:, 0], h_n[:, 1]], dim=-1)  # (N, B, 2 Hd)
        hidden = torch.tanh(self.init_state(summary))  # (N, B, Hd)
        cell = torch.zeros_like(hidden) if self.config.cell == "lstm" else None
        keys_proj = None if self.attention is None else self.attention.project_keys(memory)  # (B, S, A)
        return RNNState(hidden, cell, memory, keys_proj, src_mask, context=summary[-1])

    def decode_step(
        self, prev_tokens: torch.Tensor, state: RNNState, *, return_weights: bool = True
    ) -> tuple[torch.Tensor, RNNState, torch.Tensor | None]:
        """One decoder step.

        Args:
            prev_tokens: ``(B,)`` the previous target tokens (BOS at the first step).
            state: from :meth:`encode` or the previous step.
            return_weights: return the attention weights (ignored without attention).

        Returns:
            ``(logits (B, V), new state, weights (B, S) or None)``.
        """
        features, new_state, weights = self._step_features(prev_tokens, state, return_weights=return_weights)
        return self.out(self.dropout(features)), new_state, weights

    def _step_features(
        self, prev_tokens: torch.Tensor, state: RNNState, *, return_weights: bool
    ) -> tuple[torch.Tensor, RNNState, torch.Tensor | None]:
        """:meth:`decode_step` without the output layer: ``(features [s_i; c_i; y_{i-1}] (B, Hd + 2 Hd + E),
        new state, weights (B, S) or None)``, so that teacher forcing can run the output layer once."""
        if prev_tokens.dim() != 1 or prev_tokens.shape[0] != state.memory.shape[0]:
            raise ValueError(f"prev_tokens must be (B,) = ({state.memory.shape[0]},), got {tuple(prev_tokens.shape)}")
        check_ids("prev_tokens", prev_tokens, self.config.tgt_vocab_size)
        emb = self.dropout(self.tgt_embed(prev_tokens))  # (B, E)
        weights = None
        context = state.context  # (B, 2 Hd)
        if self.attention is not None:
            context, weights = self.attention(
                state.hidden[-1], state.memory, mask=state.src_mask, keys_proj=state.keys_proj
            )  # (B, 2 Hd), (B, S)
        rnn_in = torch.cat([emb, context], dim=-1).unsqueeze(1)  # (B, 1, E + 2 Hd)
        hx = state.hidden if state.cell is None else (state.hidden, state.cell)
        out, hx = self.decoder(rnn_in, hx)  # out (B, 1, Hd)
        hidden, cell = (hx, None) if state.cell is None else hx
        features = torch.cat([out.squeeze(1), context, emb], dim=-1)  # (B, Hd + 2 Hd + E)
        new_state = replace(state, hidden=hidden, cell=cell)
        return features, new_state, weights if return_weights else None

    def forward(
        self,
        src: torch.Tensor,
        tgt_in: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        *,
        return_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced logits.

        Args:
            src: ``(B, S)`` source ids.
            tgt_in: ``(B, L)`` target ids shifted right (BOS first).
            src_mask: ``(B, S)`` bool, True = real (None: ``src != pad_id``). The argument order is
                :class:`~qkv.models.EncoderDecoderModel`'s, so either family is called the same way.
            return_weights: also return the alignment ``(B, L, S)`` (needs attention).

        Returns:
            logits ``(B, L, V)``, or ``(logits, weights)``.
        """
        if tgt_in.dim() != 2 or tgt_in.shape[0] != src.shape[0]:
            raise ValueError(f"tgt_in must be (B, L) with B = {src.shape[0]} as in src, got {tuple(tgt_in.shape)}")
        if return_weights and self.attention is None:
            raise ValueError("return_weights needs a model built with attention=True")
        state = self.encode(src, src_mask)
        features, weights = [], []
        for t in range(tgt_in.shape[1]):
            step_features, state, w = self._step_features(tgt_in[:, t], state, return_weights=return_weights)
            features.append(step_features)
            weights.append(w)
        # The output layer runs once over all L steps: one large matmul instead of L small ones.
        out = self.out(self.dropout(torch.stack(features, dim=1)))  # (B, L, V)
        return (out, torch.stack(weights, dim=1)) if return_weights else out
