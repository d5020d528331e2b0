"""The four newer families against their definitions, written here as plain loops over (i, j) and
tokens, on randomized parameters at blocks 16-128 and odd block counts and document lengths."""
import random

import pytest
import torch

from sparsecli import (
    CausalSlidingWindowSparsityConfig,
    CompositeSparsityConfig,
    DenseSparsityConfig,
    DilatedSparsityConfig,
    DocumentSparsityConfig,
    StreamingSparsityConfig,
)

BLOCKS = (16, 32, 48, 64, 80, 128)


def _definition(nb, keep):
    return torch.tensor([[1 if keep(i, j) else 0 for j in range(nb)] for i in range(nb)], dtype=torch.int64)


def _document_definition(block, nb, lengths, uni):
    doc_of_token = []
    for d, n in enumerate(lengths):
        doc_of_token += [d] * n
    seq = nb * block
    doc_of_token = doc_of_token[:seq] + [len(lengths)] * max(0, seq - len(doc_of_token))
    docs = [set(doc_of_token[i * block:(i + 1) * block]) for i in range(nb)]
    return _definition(nb, lambda i, j: bool(docs[i] & docs[j]) and (not uni or j <= i))


def _case(trial):
    rng = random.Random(trial)
    kind = ["causal_sliding_window", "streaming", "dilated", "document"][trial % 4]
    H, block = rng.randint(1, 3), rng.choice(BLOCKS)
    nb = rng.choice([1, 3, 7, 9, 13, 21, 33])  # odd block counts, so odd multiples of the block
    att = rng.choice(["unidirectional", "bidirectional"])
    if kind == "causal_sliding_window":
        w = rng.randint(1, nb + 2)
        return CausalSlidingWindowSparsityConfig(H, block, w), nb, lambda i, j: i - w < j <= i
    if kind == "streaming":
        s, w = rng.randint(1, nb + 1), rng.randint(1, nb + 2)
        return StreamingSparsityConfig(H, block, s, w), nb, lambda i, j: j <= i and (j < s or j > i - w)
    if kind == "dilated":
        loc, stride = rng.randint(1, 5), rng.randint(1, 7)
        uni = att == "unidirectional"
        return (DilatedSparsityConfig(H, block, loc, stride, att), nb,
                lambda i, j: (abs(i - j) < loc or (i - j) % stride == 0) and (not uni or j <= i))
    lengths = [rng.randrange(1, 3 * block, 2) for _ in range(rng.randint(1, 6))]  # odd token lengths
    return DocumentSparsityConfig(H, block, lengths, att), nb, lengths


@pytest.mark.parametrize("trial", range(120))
def test_newer_kinds_equal_their_definitions(trial):
    config, nb, definition = _case(trial)
    layout = config.make_layout(nb * config.block)
    if isinstance(config, DocumentSparsityConfig):
        want = _document_definition(config.block, nb, definition, config.attention == "unidirectional")
    else:
        want = _definition(nb, definition)
    assert layout.dtype == torch.int64 and layout.shape == (config.num_heads, nb, nb)
    for h in range(config.num_heads):
        assert torch.equal(layout[h], want), f"{config} head {h} at nb={nb}"


def test_straddling_blocks_are_counted_from_tokens():
    for trial in range(40):
        rng = random.Random(trial)
        block, nb = rng.choice(BLOCKS), rng.randint(1, 20)
        lengths = [rng.randint(1, 3 * block) for _ in range(rng.randint(1, 5))]
        config = DocumentSparsityConfig(1, block, lengths)
        starts, total = set(), 0
        for n in lengths:
            total += n
            starts.add(total)  # a document (or the remainder) starts here
        want = sum(1 for i in range(nb) if any(i * block < t < (i + 1) * block for t in starts))
        assert config.straddling_blocks(nb * block) == want
        assert config.report_figures(nb * block) == {"straddling_blocks": want}


def test_document_notes_say_what_was_cut_ignored_or_added():
    config = DocumentSparsityConfig(1, 16, (100, 200, 50))
    notes = config.layout_notes(160)
    assert "document 1 is cut at the sequence end: 60 of its 200 tokens remain" in notes
    assert "1 document(s) start past the sequence end and are ignored" in notes
    assert "tokens 350..399 form one more document (50 tokens)" in config.layout_notes(400)
    assert config.layout_notes(352) == ["3 blocks straddle a document boundary: their tokens see across it unless "
                                        "the kernel also gets token-level segment ids",
                                        "tokens 350..351 form one more document (2 tokens)"]


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: CausalSlidingWindowSparsityConfig(2, num_window_blocks=0), "num_window_blocks must be >= 1, got 0"),
        (lambda: CausalSlidingWindowSparsityConfig(2, num_window_blocks=-3), "num_window_blocks"),
        (lambda: StreamingSparsityConfig(2, num_sink_blocks=0), "num_sink_blocks must be >= 1"),
        (lambda: StreamingSparsityConfig(2, num_window_blocks=-1), "num_window_blocks must be >= 1"),
        (lambda: DilatedSparsityConfig(2, num_local_blocks=0), "num_local_blocks must be >= 1"),
        (lambda: DilatedSparsityConfig(2, stride=0), "stride must be >= 1"),
        (lambda: DilatedSparsityConfig(2, stride=2.5), "stride must be an integer"),
        (lambda: DilatedSparsityConfig(2, attention="causal"), "unidirectional"),
        (lambda: DocumentSparsityConfig(2), "document_lengths must list"),
        (lambda: DocumentSparsityConfig(2, document_lengths=()), "at least one"),
        (lambda: DocumentSparsityConfig(2, document_lengths=(100, 0)), ">= 1, got 0"),
        (lambda: DocumentSparsityConfig(2, document_lengths=(100, -5)), ">= 1, got -5"),
        (lambda: DocumentSparsityConfig(2, document_lengths="100"), "document_lengths must list"),
        (lambda: StreamingSparsityConfig(0), "num_heads"),
        (lambda: CausalSlidingWindowSparsityConfig(2).make_layout(100), "dividable"),
        (lambda: CompositeSparsityConfig([StreamingSparsityConfig(2)]), "at least two"),
        (lambda: CompositeSparsityConfig([StreamingSparsityConfig(2), DenseSparsityConfig(4)]), "num_heads"),
        (lambda: CompositeSparsityConfig([StreamingSparsityConfig(2), DenseSparsityConfig(2, 32)]), "block"),
        (lambda: CompositeSparsityConfig([StreamingSparsityConfig(2), DenseSparsityConfig(2)], op="xor"), "op"),
    ],
)
def test_bad_arguments_are_value_errors(make, match):
    with pytest.raises((ValueError, NotImplementedError), match=match):
        make()


def test_every_head_is_its_own_copy_and_no_per_head_argument():
    layout = StreamingSparsityConfig(3, 16).make_layout(160)
    layout[1, 9, 0] = 0
    assert layout[0, 9, 0] == 1
    for config in (CausalSlidingWindowSparsityConfig(2), StreamingSparsityConfig(2), DilatedSparsityConfig(2),
                   DocumentSparsityConfig(2, document_lengths=(10,))):
        assert "different_layout_per_head" not in config.to_dict()
        assert config.num_layout_heads == 1


def test_composite_unions_and_intersects_parts_and_reads_causality():
    a, b = StreamingSparsityConfig(2, 16, 1, 2), DilatedSparsityConfig(2, 16, 1, 3)
    la, lb = a.make_layout(16 * 11), b.make_layout(16 * 11)
    union = CompositeSparsityConfig([a, b])
    inter = CompositeSparsityConfig([a, b], op="intersection")
    assert torch.equal(union.make_layout(16 * 11), la | lb)
    assert torch.equal(inter.make_layout(16 * 11), la & lb)
    assert not union.unidirectional and inter.unidirectional
    assert union.label == "union(streaming, dilated)"
    assert union.to_dict()["parts"][0] == {"mode": "streaming", "num_heads": 2, "block": 16,
                                           "num_sink_blocks": 1, "num_window_blocks": 2}


def test_constructing_a_config_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom sparsecli.layouts import DocumentSparsityConfig, CompositeSparsityConfig, "
            "StreamingSparsityConfig\nDocumentSparsityConfig(4, 16, (10, 20))\n"
            "CompositeSparsityConfig([StreamingSparsityConfig(4), StreamingSparsityConfig(4)])\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
