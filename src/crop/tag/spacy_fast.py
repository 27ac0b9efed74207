"""A fast tagging path for a trained spaCy student: the same model, computed with a few numpy calls.

The student's NER (`crop.train.students.spacy_student`: spaCy's `TransitionBasedParser.v2` over `Tok2Vec.v2` with
`MultiHashEmbed.v2` and `MaxoutWindowEncoder.v2`) spends most of a one-sentence call on machinery, not arithmetic:
some forty thinc layer calls, each building a backprop closure; blis' gemm, 3-4x slower than numpy's OpenBLAS on
matrices of a sentence's size; and, in the greedy parser's C loop, a round trip through the GIL at every token (a
`nogil` function declared without `noexcept` in spaCy's parser_model.pxd, which Cython then checks for errors with
the GIL held): about 13 us a token.

`FastNer.of(nlp)` reads the trained weights once and tags words (`tag_words`, what `StudentTagger` calls) or docs
in the same steps:
- the tokens' attribute ids (`LexemeFeatures`): what `Doc(vocab, words=...)` would give them, without adding
  the words to the vocabulary, which a Doc does for good (a tagger fed by clients would grow without bound);
- the token vectors (`FusedTok2Vec`): hash embeddings (thinc's own hash and gather-add kernels), the maxout mix,
  the residual window CNN over the docs padded as thinc's `with_array(pad=depth)` pads them, the projection;
- the parser's lower layer precomputed for every token and feature, as spaCy precomputes it;
- the greedy BILUO decoding (`GreedyBiluo`): the state features spaCy's NER uses (the next token, the first token
  of the open entity, the token before the next one while an entity is open), maxout hidden layer, output layer,
  and spaCy's validity rules for fresh docs (no preset entities). The hidden layer of every token in the "no
  entity open" state is computed at once; only tokens inside an entity take a step of their own.

The arithmetic is spaCy's in the same order, so the tags equal spaCy's up to float32 rounding of the matrix products
(numpy's BLAS instead of blis); the tests hold the two to the same entities on the dev sets. Any other
architecture (static vectors, other attributes or encoder, no upper layer, a beam) gets None from `FastNer.of`, and
the caller keeps spaCy's own path, as for docs with preset entities.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_EPS = 1e-08  # thinc's LayerNorm adds it to the variance


@dataclass(frozen=True)
class _Maxout:
    """A maxout layer followed by layer normalization (thinc's `Maxout(normalize=True)`)."""

    w: np.ndarray  # (nI, nP * nO): the transposed weights, piece-major, contiguous for X @ w
    b: np.ndarray  # (nP * nO,)
    n_out: int
    pieces: int
    gain: np.ndarray  # LayerNorm G
    shift: np.ndarray  # LayerNorm b

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = x @ self.w
        y += self.b
        # the weights are stored piece-major, so the max over pieces is elementwise over column blocks (numpy's
        # max over a short last axis costs ten times more)
        n = self.n_out
        best = y[:, :n]
        for p in range(1, self.pieces):
            best = np.maximum(best, y[:, p * n:(p + 1) * n])
        # thinc's LayerNorm: the same reductions as numpy's mean and var, without var's second pass for the mean
        mu = np.add.reduce(best, axis=1, keepdims=True) / n
        dist = best - mu
        var = np.add.reduce(dist * dist, axis=1, keepdims=True) / n + _EPS
        out = dist * var ** (-1.0 / 2.0)
        out *= self.gain
        out += self.shift
        return out


@dataclass(frozen=True)
class _Embedding:
    table: np.ndarray
    column: int
    seed: int


class FusedTok2Vec:
    """Sentences (spaCy docs, or their tokens' attribute ids) -> the parser's token vectors (one array, the
    sentences' tokens one after another), for inference."""

    def __init__(self, attrs: list[Any], embeddings: list[_Embedding], mix: _Maxout, encoders: list[_Maxout],
                 window: int, projection: tuple[np.ndarray, np.ndarray], ops: Any) -> None:
        self.attrs = attrs
        self.embeddings = embeddings
        self.mix = mix
        self.encoders = encoders
        self.window = window
        self.pad = window * len(encoders)  # thinc's with_array(pad=receptive field): zero rows around each doc
        self.proj_w, self.proj_b = projection
        self.ops = ops
        self.width = mix.n_out

    def __call__(self, docs: list[Any]) -> np.ndarray:
        """The token vectors of spaCy docs (their attributes as `doc.to_array` gives them)."""
        return self.vectors([doc.to_array(self.attrs).reshape(len(doc), len(self.attrs)).astype("uint64")
                             for doc in docs])

    def vectors(self, features: list[np.ndarray]) -> np.ndarray:
        """The token vectors of sentences given as their tokens' attribute ids, (tokens, attributes) each."""
        lengths = [len(f) for f in features]
        total = sum(lengths)
        if total == 0:
            return np.zeros((0, self.proj_w.shape[1]), dtype="f")
        ids = np.concatenate([f for f in features if len(f)]).astype("uint64", copy=False)
        ops = self.ops
        parts = []
        for emb in self.embeddings:
            keys = ops.hash(np.ascontiguousarray(ids[:, emb.column]), emb.seed) % emb.table.shape[0]
            parts.append(ops.gather_add(emb.table, keys))
        x = self.mix(np.concatenate(parts, axis=1))
        # the encoder sees the docs flattened with `pad` zero rows before, between and after them
        pad, width = self.pad, self.width
        padded = np.zeros((total + pad * (len([n for n in lengths if n]) + 1), width), dtype="f")
        rows = []
        at, start = pad, 0
        for n in lengths:
            if n:
                padded[at:at + n] = x[start:start + n]
                rows.append((at, n))
                at += n + pad
                start += n
        h = padded
        for layer in self.encoders:
            h = h + layer(self._window(h))
        tokens = np.concatenate([h[a:a + n] for a, n in rows])
        out = tokens @ self.proj_w
        out += self.proj_b
        return out

    def _window(self, h: np.ndarray) -> np.ndarray:
        """Each row with its `window` neighbours on each side (zeros past the ends): thinc's seq2col kernel."""
        return self.ops.seq2col(h, self.window)


_CONTROLLER: Any = None


def one_blas_thread() -> Any:
    """A context in which numpy's BLAS runs on one thread. OpenBLAS splits a sentence's matrix products over its
    threads, which then spin-wait after each one: on a busy machine they take the cores the service's other work
    (and its clients) need, for no gain at these sizes (8 us to enter, measured)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()  # inspecting the loaded libraries costs milliseconds: once
    return _CONTROLLER.limit(limits=1, user_api="blas")


def _maxout(node: Any) -> _Maxout | None:
    """A `maxout>>layernorm` (or `maxout>>layernorm>>dropout`) chain's arrays; None for anything else."""
    walk = [n for n in node.walk() if n.name in ("maxout", "layernorm")]
    if [n.name for n in walk] != ["maxout", "layernorm"]:
        return None
    mo, ln = walk
    n_out, pieces, n_in = mo.get_dim("nO"), mo.get_dim("nP"), mo.get_dim("nI")
    # thinc's W is (nO, nP, nI) and b (nO, nP): reordered piece-major
    w = np.ascontiguousarray(mo.get_param("W").reshape(n_out, pieces, n_in).transpose(1, 0, 2)
                             .reshape(pieces * n_out, n_in).T)
    b = np.ascontiguousarray(mo.get_param("b").reshape(n_out, pieces).T.reshape(pieces * n_out))
    return _Maxout(w=w, b=b, n_out=n_out, pieces=pieces,
                   gain=ln.get_param("G").copy(), shift=ln.get_param("b").copy())


def _plan(chain: Any, attrs: list[Any]) -> FusedTok2Vec | str:
    """The fused form of the parser's `tok2vec>>list2array>>linear` chain, or why it cannot be fused."""
    if len(chain.layers) != 3 or [n.name for n in chain.layers[1:]] != ["list2array", "linear"]:
        return "not tok2vec>>list2array>>linear"
    tok2vec = chain.layers[0]
    if len(tok2vec.layers) != 2:
        return "the token-to-vector layer is not embed>>encode"
    embed, encode = tok2vec.layers
    names = [n.name for n in embed.layers]
    if len(names) != 5 or names[0] != "extract_features" or names[1] != "list2ragged" or names[4] != "ragged2list":
        return f"an embedding layer other than MultiHashEmbed without static vectors ({embed.name})"
    tables = [n for n in embed.layers[2].walk() if n.name == "hashembed"]
    if len(tables) != len(attrs):  # (their dropout does not apply when tagging)
        return "hash embeddings that do not match the extracted attributes"
    embeddings = [_Embedding(table=n.get_param("E"), column=int(n.attrs["column"]), seed=int(n.attrs["seed"]))
                  for n in tables]
    mix = _maxout(embed.layers[3])
    if mix is None:
        return "the embeddings' mix is not maxout>>layernorm"
    if not encode.name.startswith("with_array(") or not encode.layers:
        return f"an encoder other than MaxoutWindowEncoder ({encode.name})"
    stack = encode.layers[0]  # one residual block (depth 1), or a chain of them
    blocks = stack.layers if stack.layers and all(n.name.startswith("residual(") for n in stack.layers) \
        else [stack]
    encoders: list[_Maxout] = []
    windows = set()
    for block in blocks:
        inner = [n.name for n in block.walk()]
        if not block.name.startswith("residual(") or "expand_window" not in inner:
            return f"an encoder block other than residual(expand_window>>maxout>>layernorm) ({block.name})"
        windows.add(int(next(n for n in block.walk() if n.name == "expand_window").attrs["window_size"]))
        layer = _maxout(block)
        if layer is None:
            return f"an encoder block other than residual(expand_window>>maxout>>layernorm) ({block.name})"
        encoders.append(layer)
    window = windows.pop() if len(windows) == 1 else -1
    if window < 0 or int(encode.attrs.get("pad", -1)) != window * len(encoders):
        return "encoder padding other than window size x depth"
    linear = chain.layers[2]
    projection = (np.ascontiguousarray(linear.get_param("W").T), linear.get_param("b").copy())
    return FusedTok2Vec(attrs, embeddings, mix, encoders, window, projection, chain.ops)


@dataclass(frozen=True)
class _Moves:
    """The NER's classes by kind: index arrays and, per class, its entity label ("" for O and blocked ones)."""

    begin: np.ndarray
    inside: np.ndarray
    last: np.ndarray
    unit: np.ndarray
    out: np.ndarray
    labels: list[str]
    unseen: np.ndarray  # classes never seen in training: scored as the lowest score, as spaCy does


def _moves(names: list[str], unseen: set[int]) -> _Moves | str:
    kinds: dict[str, list[int]] = {k: [] for k in "BILUO"}
    labels: list[str] = []
    for i, name in enumerate(names):
        kind, _, label = name.partition("-")
        if kind not in kinds:
            return f"an unknown NER class {name!r}"
        if kind != "O" and not label:
            labels.append("")  # "U-": a blocked (preset) span, never valid on a fresh doc
            continue
        kinds[kind].append(i)
        labels.append(label)
    if len(kinds["O"]) != 1:
        return "no single O class"
    as_array = {k: np.asarray(v, dtype=np.intp) for k, v in kinds.items()}
    return _Moves(begin=as_array["B"], inside=as_array["I"], last=as_array["L"], unit=as_array["U"],
                  out=as_array["O"], labels=labels, unseen=np.asarray(sorted(unseen), dtype=np.intp))


class GreedyBiluo:
    """spaCy's greedy NER decoding (BiluoPushDown, state features of `state_type="ner"`) over precomputed
    lower-layer features, for docs without preset entities."""

    def __init__(self, lower_w: np.ndarray, lower_b: np.ndarray, pad: np.ndarray, upper_w: np.ndarray,
                 upper_b: np.ndarray, moves: _Moves) -> None:
        n_feats, n_hidden, pieces, n_in = lower_w.shape
        self.n_feats, self.n_hidden, self.pieces = n_feats, n_hidden, pieces
        self.lower_w = np.ascontiguousarray(lower_w.reshape(n_feats * n_hidden * pieces, n_in).T)
        self.lower_b = lower_b.astype("f")  # (nH, nP)
        self.pad = pad.reshape(n_feats, n_hidden, pieces).astype("f")
        self.upper_w = np.ascontiguousarray(upper_w.T)  # (nH, nClasses)
        self.upper_b = upper_b.astype("f")
        self.moves = moves
        self._begin_set = frozenset(int(i) for i in moves.begin)
        self._unit_set = frozenset(int(i) for i in moves.unit)
        self._last_set = frozenset(int(i) for i in moves.last)
        n = len(moves.labels)
        self.n_classes = n
        # the valid classes of each state kind (spaCy's is_valid of Begin/In/Last/Unit/Out on a fresh doc)
        label_of = moves.labels
        self._closed = np.zeros(n, dtype=bool)  # no entity open: O, B (not at the last token), U
        self._closed[moves.out] = True
        self._closed[moves.begin] = True
        self._closed[moves.unit] = True
        self._closed_last = self._closed.copy()  # at the last token (or before a sentence start): no B
        self._closed_last[moves.begin] = False
        self._closed_space = np.zeros(n, dtype=bool)  # a whitespace token: only O
        self._closed_space[moves.out] = True
        self._open: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # label -> (I or L valid, L only)
        for label in {label_of[i] for i in moves.inside} | {label_of[i] for i in moves.last}:
            both = np.zeros(n, dtype=bool)
            last_only = np.zeros(n, dtype=bool)
            for i in moves.inside:
                if label_of[i] == label:
                    both[i] = True
            for i in moves.last:
                if label_of[i] == label:
                    both[i] = True
                    last_only[i] = True
            self._open[label] = (both, last_only)

    def _hidden(self, unmaxed: np.ndarray) -> np.ndarray:
        """(..., nH, nP) -> (..., nH): the max over pieces."""
        best = unmaxed[..., 0]
        for p in range(1, self.pieces):
            best = np.maximum(best, unmaxed[..., p])
        return best

    def _scores(self, hidden: np.ndarray) -> np.ndarray:
        scores = hidden @ self.upper_w
        scores += self.upper_b
        if len(self.moves.unseen):
            scores[..., self.moves.unseen] = scores.min(axis=-1, keepdims=True)
        return scores

    def decode(self, tokvecs: np.ndarray, space: np.ndarray, sent_start: np.ndarray) -> list[tuple[int, int, str]]:
        """The entities (start, end, label) of one doc from its token vectors, whitespace tokens and sentence
        starts."""
        n = tokvecs.shape[0]
        if n == 0:
            return []
        feats = (tokvecs @ self.lower_w).reshape(n, self.n_feats, self.n_hidden, self.pieces)
        # the state with no entity open, for every token at once: the token's own feature, padding for the others
        closed = feats[:, 0] + self.pad[1]
        closed += self.pad[2]
        closed += self.lower_b
        closed_scores = self._scores(self._hidden(closed))
        # the best closed-state action of every token under each of the three validity masks, at once
        best_closed = {id(mask): np.argmax(np.where(mask, closed_scores, -np.inf), axis=1).tolist()
                       for mask in (self._closed, self._closed_last, self._closed_space)}
        ents: list[tuple[int, int, str]] = []
        labels = self.moves.labels
        start = -1
        label = ""
        for t in range(n):
            next_starts_sentence = t + 1 < n and sent_start[t + 1] == 1
            at_end = t + 1 >= n
            if start < 0:
                if space[t]:
                    valid = self._closed_space
                elif at_end or next_starts_sentence:
                    valid = self._closed_last
                else:
                    valid = self._closed
                best = best_closed[id(valid)][t]
            else:
                both, last_only = self._open[label]
                valid = last_only if at_end or next_starts_sentence else both
                # spaCy's order of the sums: next token, entity start, previous token, then the bias
                unmaxed = feats[t, 0] + feats[start, 1]
                unmaxed += feats[t - 1, 2]
                unmaxed += self.lower_b
                scores = self._scores(self._hidden(unmaxed))
                best = int(np.argmax(np.where(valid, scores, -np.inf)))
            if start < 0:
                if best in self._begin_set:
                    start, label = t, labels[best]
                elif best in self._unit_set:
                    ents.append((t, t + 1, labels[best]))
            elif best in self._last_set:
                ents.append((start, t + 1, label))
                start, label = -1, ""
        return ents


class LexemeFeatures:
    """The attribute ids spaCy's `Doc(vocab, words=...)` would give each word (NORM, PREFIX, ...) and whether it
    is whitespace, without adding the word to the vocabulary: a word the vocabulary knows is read from its
    lexeme, any other is computed with the vocabulary's own attribute functions and string hash, as spaCy computes
    a new lexeme's. A Doc adds every new word to the vocabulary for good (~840 bytes a word, measured), so a tagger
    that makes Docs of what clients send grows without bound; this keeps a bounded cache instead."""

    _BY_LEXEME = {"ORTH": "orth", "LOWER": "lower", "NORM": "norm", "PREFIX": "prefix", "SUFFIX": "suffix",
                  "SHAPE": "shape"}

    def __init__(self, vocab: Any, attrs: list[Any], cache_size: int = 100_000) -> None:
        from spacy.attrs import IDS, IS_SPACE

        self.vocab = vocab
        self.names = [_attr_name(a) for a in attrs]
        self.getters = [vocab.lex_attr_getters.get(IDS[n]) for n in self.names]
        self.is_space = vocab.lex_attr_getters.get(IS_SPACE) or str.isspace
        self.cache_size = cache_size
        self._cache: dict[str, tuple[tuple[int, ...], bool]] = {}

    @classmethod
    def supports(cls, vocab: Any, attrs: list[Any]) -> str | None:
        """Why these attributes cannot be computed without a Doc, or None."""
        from spacy.attrs import IDS

        for a in attrs:
            name = _attr_name(a)
            if name not in cls._BY_LEXEME:
                return f"a token attribute other than {', '.join(cls._BY_LEXEME)} ({a!r})"
            if name != "ORTH" and vocab.lex_attr_getters.get(IDS[name]) is None:
                return f"no attribute function for {name}"
        return None

    def word(self, word: str) -> tuple[tuple[int, ...], bool]:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        if word in self.vocab:  # a lexeme already: its attributes as stored (reading it adds nothing)
            lex = self.vocab[word]
            value = (tuple(int(getattr(lex, self._BY_LEXEME[n])) for n in self.names), bool(lex.is_space))
        else:
            # spaCy's id of a string: the fixed symbol id for its own symbols ("X", "meta", ...), else the hash
            from spacy.strings import get_string_id

            value = (tuple(get_string_id(word if getter is None else getter(word)) for getter in self.getters),
                     bool(self.is_space(word)))
        if len(self._cache) >= self.cache_size:
            self._cache.clear()  # bounded: a burst of new words costs recomputing, never memory
        self._cache[word] = value
        return value

    def sentence(self, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, attributes) ids and the tokens' whitespace flags."""
        values = [self.word(w) for w in words]
        ids = np.array([v[0] for v in values], dtype="uint64").reshape(len(words), len(self.names))
        return ids, np.array([v[1] for v in values], dtype=bool)


def _attr_name(attr: Any) -> str:
    from spacy.attrs import NAMES

    return NAMES[attr] if isinstance(attr, int) else str(attr).upper()


class FastNer:
    """A spaCy student's NER as token vectors plus greedy decoding, both in numpy (see the module's doc)."""

    def __init__(self, tok2vec: FusedTok2Vec, decoder: GreedyBiluo, features: LexemeFeatures) -> None:
        self.tok2vec = tok2vec
        self.decoder = decoder
        self.features = features

    @classmethod
    def of(cls, nlp: Any, pipe: str = "ner") -> FastNer | None:
        """The fast path of `nlp`'s NER, or None (said in the debug log) when its architecture is not the one this
        computes."""
        why = _why_not(nlp, pipe)
        if isinstance(why, str):
            log.debug("no fast path for the student", extra={"why": why})
            return None
        return why

    def __call__(self, docs: list[Any]) -> list[list[tuple[int, int, str]]]:
        """The entities (start, end, label) of each doc. Docs with preset entities are not for this path."""
        flags = [doc.to_array(["IS_SPACE", "SENT_START"]).reshape(len(doc), 2) for doc in docs]
        return self._decode(self.tok2vec(docs), [(f[:, 0], f[:, 1]) for f in flags])

    def tag_words(self, sentences: list[list[str]]) -> list[list[tuple[int, int, str]]]:
        """The entities (start, end, label) of each sentence given as its words, as spaCy tags
        `Doc(vocab, words=words)` (one sentence each), without making Docs or growing the vocabulary."""
        features = [self.features.sentence(list(words)) for words in sentences]
        # a Doc made of words starts one sentence at its first token and none after
        return self._decode(self.tok2vec.vectors([ids for ids, _ in features]),
                            [(space, np.zeros(len(space), dtype=np.int64)) for _, space in features])

    def _decode(self, vectors: np.ndarray, flags: list[tuple[np.ndarray, np.ndarray]]
                ) -> list[list[tuple[int, int, str]]]:
        """Each sentence's entities from the token vectors of all of them (one after another) and its tokens'
        whitespace and sentence-start flags."""
        out: list[list[tuple[int, int, str]]] = []
        at = 0
        for space, sent_start in flags:
            n = len(space)
            out.append(self.decoder.decode(vectors[at:at + n], space, sent_start) if n else [])
            at += n
        return out


def _why_not(nlp: Any, pipe: str) -> FastNer | str:
    if nlp.pipe_names != [pipe]:
        # another component could set entities or features before the NER: spaCy's own path then
        return f"pipes other than {pipe!r} ({', '.join(nlp.pipe_names)})"
    ner = nlp.get_pipe(pipe)
    model = ner.model
    if model.name != "parser_model" or len(model.layers) != 3:
        return f"not spaCy's transition-based parser ({model.name})"
    if int(ner.cfg.get("beam_width", 1)) != 1:
        return "beam search"
    if type(model.ops).__name__ != "NumpyOps":
        return f"weights on {type(model.ops).__name__}"
    if not model.attrs.get("has_upper"):
        return "no upper layer"
    if type(ner.moves).__name__ != "BiluoPushDown":
        return f"a transition system other than BILUO ({type(ner.moves).__name__})"
    chain, lower, upper = model.layers
    extract = next((n for n in chain.walk() if n.name == "extract_features"), None)
    if extract is None:
        return "no feature extraction"
    attrs = list(extract.attrs["columns"])
    tok2vec = _plan(chain, attrs)
    if isinstance(tok2vec, str):
        return tok2vec
    unsupported = LexemeFeatures.supports(nlp.vocab, attrs)
    if unsupported is not None:
        return unsupported
    if lower.name != "precomputable_affine" or lower.get_dim("nF") != 3 or upper.name != "linear":
        return "a parser other than precomputable_affine (3 features) >> linear"
    moves = _moves([ner.moves.get_class_name(i) for i in range(ner.moves.n_moves)],
                   set(model.attrs.get("unseen_classes") or ()))
    if isinstance(moves, str):
        return moves
    if upper.get_param("W").shape[0] != len(moves.labels):
        return "an output layer that does not match the classes"
    decoder = GreedyBiluo(lower.get_param("W"), lower.get_param("b"), lower.get_param("pad"),
                          upper.get_param("W"), upper.get_param("b"), moves)
    return FastNer(tok2vec, decoder, LexemeFeatures(nlp.vocab, attrs))
