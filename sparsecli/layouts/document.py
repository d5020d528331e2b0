"""Document: packed sequences, where tokens attend only within their own document."""
from __future__ import annotations

from .base import SparsityConfig, _int, check_attention


class DocumentSparsityConfig(SparsityConfig):
    """Documents of ``document_lengths`` tokens fill the sequence in order; the tokens after the
    last one form one more document. Query block ``i`` sees key block ``j`` when the two share a
    document (``attention="unidirectional"`` adds ``j <= i``). Every head has the same layout.

    A block that holds tokens of two documents (it *straddles* a boundary) is kept whole, so at
    token level its tokens see across the boundary: exact document masking needs token-level
    segment ids on top of this layout. Lengths reaching past the sequence are cut at its end.
    """

    kind = "document"
    per_head_argument = False

    def __init__(self, num_heads, block=16, document_lengths=None, attention="bidirectional"):
        super().__init__(num_heads, block)
        if document_lengths is None or isinstance(document_lengths, (str, bytes)) or not hasattr(document_lengths, "__iter__"):
            raise ValueError(f"document_lengths must list the packed documents' token lengths, e.g. (1000, 3096); "
                             f"got {document_lengths!r}")
        self.document_lengths = tuple(_int(n, "each entry of document_lengths", 1) for n in document_lengths)
        if not self.document_lengths:
            raise ValueError("document_lengths must list at least one document length, e.g. (1000, 3096)")
        self.attention = check_attention(attention)

    def _block_documents(self, nb: int):
        """(first, last) document index of each block's tokens, as int64 tensors of length nb."""
        import torch

        starts = torch.tensor(self.document_lengths, dtype=torch.int64).cumsum(0)  # where documents 1, 2, ... start
        first_token = torch.arange(nb, dtype=torch.int64) * self.block
        first = torch.searchsorted(starts, first_token, right=True)
        last = torch.searchsorted(starts, first_token + self.block - 1, right=True)
        return first, last

    def make_layout(self, seq_len):
        nb = self.num_blocks(seq_len)
        first, last = self._block_documents(nb)
        m = (first[:, None] <= last[None, :]) & (first[None, :] <= last[:, None])
        if self.unidirectional:
            m = m.tril()
        return self._assemble(nb, lambda h: m)

    def straddling_blocks(self, seq_len) -> int:
        first, last = self._block_documents(self.num_blocks(seq_len))
        return int((first != last).sum())

    def report_figures(self, seq_len) -> dict:
        return {"straddling_blocks": self.straddling_blocks(seq_len)}

    def layout_notes(self, seq_len) -> list[str]:
        notes = []
        n = self.straddling_blocks(seq_len)
        if n:
            blocks, its = ("1 block straddles", "its") if n == 1 else (f"{n} blocks straddle", "their")
            notes.append(f"{blocks} a document boundary: {its} tokens see across it unless the kernel "
                         "also gets token-level segment ids")
        ends = [0]
        for length in self.document_lengths:
            ends.append(ends[-1] + length)
        inside = sum(1 for start in ends[:-1] if start < seq_len)  # documents that start in the sequence
        if ends[inside] > seq_len:
            cut = inside - 1
            notes.append(f"document {cut} is cut at the sequence end: {seq_len - ends[cut]} of its "
                         f"{self.document_lengths[cut]} tokens remain")
        if inside < len(self.document_lengths):
            notes.append(f"{len(self.document_lengths) - inside} document(s) start past the sequence end and are ignored")
        if ends[-1] < seq_len:
            notes.append(f"tokens {ends[-1]}..{seq_len - 1} form one more document ({seq_len - ends[-1]} tokens)")
        return notes
