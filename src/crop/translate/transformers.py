"""Seq2seq translation with Hugging Face transformers: M2M100, NLLB, Marian or an LST checkpoint, by hub id or
local path, on CPU or CUDA (fp16/bf16 on GPU).

    TransformersTranslator("facebook/m2m100_418M", device="cuda", dtype="fp16", beam_size=5, n_best=3)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from crop.torch_device import resolve_device, resolve_dtype
from crop.translate.seq2seq import DEFAULT_SLOTS, SLOT_RE, Hypothesis, Seq2SeqTranslator

log = logging.getLogger(__name__)

def vocabulary_table(tokenizer: Any, size: int) -> list[str]:
    """The piece of every id of a model's embedding matrix. Asked id by id, because some tokenizers (M2M100
    under transformers 5) leave their language codes out of `get_vocab()`; ids the tokenizer does not know
    (M2M100's "madeup words") get placeholder names."""
    table = tokenizer.convert_ids_to_tokens(list(range(size)))
    seen: set[str] = set()
    out = []
    for i, piece in enumerate(table):
        if piece is None or (piece in seen and piece == tokenizer.unk_token):
            piece = f"madeupword{i}"
        seen.add(piece)
        out.append(piece)
    return out


def add_slot_tokens(tokenizer: Any, model: Any, n: int) -> list[str]:
    """Give `tokenizer` and `model` the slot tokens `__SLOT0__` .. `__SLOT{n-1}__` (new embedding rows) and return
    the new vocabulary table. The ids are chosen here, after every id the model already has: transformers 5's
    M2M100 tokenizer would give added tokens the ids of its language codes. They are registered in the tokenizer
    (as special tokens) so that a saved checkpoint reads them back at the same ids."""
    from transformers import AddedToken

    size = model.get_input_embeddings().num_embeddings
    table = vocabulary_table(tokenizer, size)
    slots = [f"__SLOT{i}__" for i in range(n) if f"__SLOT{i}__" not in table]
    if not slots:
        return table
    ids = list(range(size, size + len(slots)))
    decoder = getattr(tokenizer, "_added_tokens_decoder", None)
    if isinstance(decoder, dict) and hasattr(tokenizer, "_update_trie"):  # python tokenizers: ids set directly
        for i, piece in zip(ids, slots, strict=True):
            decoder[i] = AddedToken(piece, special=True, normalized=False)
            tokenizer._added_tokens_encoder[piece] = i
        tokenizer._update_trie()
    else:  # fast tokenizers number added tokens themselves, after their own vocabulary
        tokenizer.add_tokens([AddedToken(p, special=True, normalized=False) for p in slots], special_tokens=True)
        ids = tokenizer.convert_tokens_to_ids(slots)
        clash = [p for i, p in zip(ids, slots, strict=True) if i < size and not table[i].startswith("madeupword")]
        if clash:
            raise ValueError(f"the tokenizer gave slot tokens ids its model already uses: {clash[:3]}")
    model.resize_token_embeddings(max(size, max(ids) + 1))
    table += [f"madeupword{i}" for i in range(size, max(size, max(ids) + 1))]
    for i, piece in zip(ids, slots, strict=True):
        table[i] = piece
    return table


class TransformersTranslator(Seq2SeqTranslator):
    name = "transformers"

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto", slots: int = DEFAULT_SLOTS,
                 **options: Any) -> None:
        super().__init__(model, **options)
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(model)
            self.model = AutoModelForSeq2SeqLM.from_pretrained(model, dtype=self.dtype)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot load a seq2seq translation model from {model!r}: {exc}") from exc
        self.table = vocabulary_table(tokenizer, self.model.get_input_embeddings().num_embeddings)
        if self._markers == "slot" and "__SLOT0__" not in self.table:
            log.warning("tokenizer has no slot tokens: added them as new tokens; only a model fine-tuned for "
                        "them (an LST checkpoint) will keep them in its translations",
                        extra={"model": model, "slots": slots})
            self.table = add_slot_tokens(tokenizer, self.model, slots)
        self.ids = {}
        for i, piece in enumerate(self.table):
            self.ids.setdefault(piece, i)
        self.model.to(self.device).eval()
        self._torch = torch
        self._setup(tokenizer, set(self.table))
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None)
        cfg = self.model.generation_config
        # a translation cut at the length limit stays cut, as in CTranslate2 (Marian's configs would otherwise
        # replace its last piece by </s>)
        cfg.forced_eos_token_id = None
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else cfg.pad_token_id
        self._eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else cfg.eos_token_id
        self._unk = tokenizer.unk_token_id or 0

    def to_ids(self, pieces: Sequence[str]) -> list[int]:
        return [self.ids.get(p, self._unk) for p in pieces]

    def _generate(self, sources: list[list[str]], target_prefix: list[str], n: int, beam_size: int,
                  max_new: int) -> list[list[Hypothesis]]:
        torch = self._torch
        ids = [self.to_ids(s) for s in sources]
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, x in enumerate(ids):  # right padding, as the models were trained
            input_ids[row, :len(x)] = torch.tensor(x)
            mask[row, :len(x)] = 1
        kwargs: dict[str, Any] = {}
        if target_prefix:
            kwargs["forced_bos_token_id"] = self.ids[target_prefix[0]]
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device), num_beams=beam_size,
                num_return_sequences=n, do_sample=False, max_new_tokens=max_new + len(target_prefix),
                return_dict_in_generate=True, output_scores=beam_size > 1, **kwargs)
        sequences = out.sequences.tolist()
        scores = out.sequences_scores.tolist() if getattr(out, "sequences_scores", None) is not None else None
        results: list[list[Hypothesis]] = []
        for row in range(len(sources)):
            hyps = []
            for k in range(n):
                j = row * n + k
                seq = sequences[j][1:]  # the decoder start token
                seq = seq[len(target_prefix):] if target_prefix else seq
                if self._eos in seq:
                    seq = seq[:seq.index(self._eos)]
                pieces = [self.table[t] for t in seq if t != self.pad_id and t < len(self.table)]
                hyps.append(Hypothesis(pieces, scores[j] if scores else 0.0))
            results.append(hyps)
        return results

    def has_slot_tokens(self) -> bool:
        return any(SLOT_RE.fullmatch(p) for p in self.table)
