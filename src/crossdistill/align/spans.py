"""Span alignment: groups of student tokens <-> groups of teacher tokens that cover the same completion text.

Input is what :func:`crossdistill.data.render.render` records for each side: the character span ``(start, end)`` of
every completion token in the shared completion text, spans partitioning ``completion[:covered]`` (EOS is the
zero-width span at the end). Only the END of each span matters: ends are non-decreasing, and a group closes exactly
where both tokenizations share a boundary.

Rule (the two-pointer walk of GOLD's ``_align_by_byte_offsets``, on characters instead of bytes —
our span rule already gives every character to the token that completes it, so character boundaries are the only
boundaries a token sequence can share): walk both sides; advance the side whose current token ends earlier; when
both current tokens end at the same position, close a group on each side. Consequences:

* groups are contiguous, non-empty on both sides, in order, and partition every token up to the last shared boundary;
* each group's text ``completion[start of its first token : end of its last token]`` is the same on both sides;
* zero-width tokens (byte-level pieces of an unfinished character, a leading ``▁``) join the group that closes next;
  two zero-width EOS tokens at the end pair with each other;
* identical tokenizations give the identity alignment (every token its own group);
* zero-width tokens after the last shared boundary (an EOS only one side has, or the EOS of a side whose trailing text
  the other side's tokenizer dropped) join the last group;
* the other tokens after the last shared boundary (one side truncated) are UNALIGNED (group -1) and excluded from
  cross-tokenizer terms; :attr:`Alignment.num_unaligned` counts them.

The walk is vectorized: the k-th token ending at position c on one side closes a group iff the other side also has at
least k+1 tokens ending at c (:func:`group_ids`). :func:`align_spans_reference` is the literal two-pointer loop,
kept for tests. :class:`BatchAlignment` turns per-example alignments into flat index tensors, built once per batch,
so the losses do no per-token Python work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

Spans = Sequence[tuple[int, int]] | np.ndarray


def _ends(spans: Spans) -> np.ndarray:
    arr = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    ends = arr[:, 1]
    if ends.size and np.any(np.diff(ends) < 0):
        raise ValueError("span ends must be non-decreasing (use crossdistill.data.render spans, which partition the "
                         f"completion text); got ends {ends.tolist()[:20]}")
    return ends


def _occurrence_keys(ends: np.ndarray) -> np.ndarray:
    """Key (end, rank among tokens with the same end) packed in one int64."""
    n = ends.size
    if n == 0:
        return ends
    idx = np.arange(n)
    new = np.ones(n, dtype=bool)
    new[1:] = ends[1:] != ends[:-1]
    first = np.maximum.accumulate(np.where(new, idx, 0))
    return ends * (1 << 24) + (idx - first)


def group_ids(student_spans: Spans, teacher_spans: Spans) -> tuple[np.ndarray, np.ndarray, int]:
    """Group id of every student and teacher completion token (vectorized two-pointer walk).

    Args:
        student_spans: ``[n_s, 2]`` character spans of the student's completion tokens.
        teacher_spans: ``[n_t, 2]`` the same for the teacher.

    Returns:
        ``(gid_s [n_s], gid_t [n_t], num_groups)``: int64 group ids in ``0 .. num_groups-1``, ``-1`` for tokens after
        the last shared boundary.
    """
    es, et = _ends(student_spans), _ends(teacher_spans)
    ks, kt = _occurrence_keys(es), _occurrence_keys(et)
    close_s = np.isin(ks, kt, assume_unique=True)
    close_t = np.isin(kt, ks, assume_unique=True)
    g = int(close_s.sum())

    last = int(es[close_s][-1]) if g else -1

    def ids(close: np.ndarray, ends: np.ndarray) -> np.ndarray:
        # A token's group = number of closing tokens before it. After the last close, zero-width tokens AT the last
        # shared boundary (an EOS only one side has) join the last group; the rest is unaligned.
        gid = np.cumsum(close) - close
        tail = gid >= g
        gid[tail & (ends == last)] = g - 1
        gid[tail & (ends != last)] = -1
        return gid.astype(np.int64)

    return ids(close_s, es), ids(close_t, et), g


def align_spans_reference(student_spans: Spans, teacher_spans: Spans) -> tuple[list[list[int]], list[list[int]]]:
    """Literal two-pointer walk, one token at a time; returns the groups as lists of token indices. For tests."""
    es, et = _ends(student_spans).tolist(), _ends(teacher_spans).tolist()
    gs: list[list[int]] = []
    gt: list[list[int]] = []
    i = j = 0
    cur_s: list[int] = []
    cur_t: list[int] = []
    while i < len(es) and j < len(et):
        if es[i] < et[j]:
            cur_s.append(i)
            i += 1
        elif et[j] < es[i]:
            cur_t.append(j)
            j += 1
        else:
            cur_s.append(i)
            cur_t.append(j)
            gs.append(cur_s)
            gt.append(cur_t)
            cur_s, cur_t = [], []
            i += 1
            j += 1
    if gs:
        boundary = es[gs[-1][-1]]
        gs[-1] += [k for k in range(i, len(es)) if es[k] == boundary]
        gt[-1] += [k for k in range(j, len(et)) if et[k] == boundary]
    return gs, gt


@dataclass(frozen=True)
class Alignment:
    """Alignment of one example's completion tokens."""

    student_group: np.ndarray
    """``[n_s]`` int64 group id of each student completion token, ``-1`` if unaligned."""
    teacher_group: np.ndarray
    """``[n_t]`` int64 group id of each teacher completion token, ``-1`` if unaligned."""
    num_groups: int
    """Number of groups G."""

    @property
    def num_unaligned(self) -> int:
        return int((self.student_group < 0).sum() + (self.teacher_group < 0).sum())

    def groups(self) -> tuple[list[list[int]], list[list[int]]]:
        """Token indices of every group, ``(student_groups, teacher_groups)``, each a list of G lists."""
        out = []
        for gid in (self.student_group, self.teacher_group):
            lists: list[list[int]] = [[] for _ in range(self.num_groups)]
            for i, g in enumerate(gid.tolist()):
                if g >= 0:
                    lists[g].append(i)
            out.append(lists)
        return out[0], out[1]

    def sizes(self) -> tuple[np.ndarray, np.ndarray]:
        """``(student_sizes [G], teacher_sizes [G])``: tokens per group on each side."""
        g = self.num_groups
        return (np.bincount(self.student_group[self.student_group >= 0], minlength=g),
                np.bincount(self.teacher_group[self.teacher_group >= 0], minlength=g))

    @property
    def is_identity(self) -> bool:
        n_s, n_t = self.student_group.size, self.teacher_group.size
        return n_s == n_t == self.num_groups and bool(np.all(self.student_group == np.arange(n_s)))


def align_spans(student_spans: Spans, teacher_spans: Spans) -> Alignment:
    """Align one example (see the module docstring for the rule)."""
    gs, gt, g = group_ids(student_spans, teacher_spans)
    return Alignment(gs, gt, g)


def _side_index(groups: Sequence[np.ndarray], rows: Sequence[np.ndarray], offsets: np.ndarray):
    """Flatten one side: global group id and target row of every aligned token with a row."""
    gid, row = [], []
    for b, (g, r) in enumerate(zip(groups, rows)):
        keep = (g >= 0)
        gid.append(g[keep] + offsets[b])
        row.append(r[keep])
    return np.concatenate(gid) if gid else np.zeros(0, np.int64), np.concatenate(row) if row else np.zeros(0, np.int64)


@dataclass(frozen=True)
class BatchAlignment:
    """Flat index tensors for a batch, built once; what the cross-tokenizer losses consume.

    Rows index each side's TARGET rows in row-major ``mask.nonzero()`` order — the order of ``logits[mask]`` after
    :func:`crossdistill.positions.shift_targets` — so completion token ``c`` of example ``b`` maps to the row that
    predicts it. Groups whose tokens lack a predictor row (a completion at sequence index 0) are dropped.
    """

    student_rows: torch.Tensor
    """``[n_s]`` int64 target row of every aligned student token, tokens of one group contiguous and in order."""
    student_groups: torch.Tensor
    """``[n_s]`` int64 global group id (0..G-1) of each entry of ``student_rows``; non-decreasing."""
    teacher_rows: torch.Tensor
    """``[n_t]`` int64 teacher target rows, same layout."""
    teacher_groups: torch.Tensor
    """``[n_t]`` int64 global group ids of ``teacher_rows``."""
    num_groups: int
    """G, groups in the whole batch."""
    group_example: torch.Tensor
    """``[G]`` int64 example index of each group."""

    def first_last(self, side: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(first_row [G], last_row [G])`` target rows of the first and last token of each group on ``side``."""
        rows, groups = (self.student_rows, self.student_groups) if side == "student" else (
            self.teacher_rows, self.teacher_groups)
        n = rows.numel()
        is_first = torch.ones(n, dtype=torch.bool, device=rows.device)
        is_last = torch.ones(n, dtype=torch.bool, device=rows.device)
        if n > 1:
            change = groups[1:] != groups[:-1]
            is_first[1:] = change
            is_last[:-1] = change
        return rows[is_first], rows[is_last]

    @property
    def identity(self) -> bool:
        """True when every group has exactly one token on each side."""
        return self.student_rows.numel() == self.teacher_rows.numel() == self.num_groups

    def flat(self, student_mask: torch.Tensor, teacher_mask: torch.Tensor) -> BatchAlignment:
        """The same alignment with rows indexing the FLATTENED ``[B * T]`` logits of each side instead of the
        target rows, so a loss can take ``logits.reshape(B * T, V)`` without copying ``logits[mask]``."""
        s_pos = torch.nonzero(student_mask.reshape(-1)).squeeze(-1)
        t_pos = torch.nonzero(teacher_mask.reshape(-1)).squeeze(-1)
        return BatchAlignment(s_pos[self.student_rows], self.student_groups, t_pos[self.teacher_rows],
                              self.teacher_groups, self.num_groups, self.group_example)

    def to(self, device: torch.device | str) -> BatchAlignment:
        return BatchAlignment(self.student_rows.to(device), self.student_groups.to(device),
                              self.teacher_rows.to(device), self.teacher_groups.to(device), self.num_groups,
                              self.group_example.to(device))

    def one_to_one(self) -> BatchAlignment:
        """The groups of exactly one student and one teacher token, renumbered 0..G'-1.

        Why: for a multi-token group the teacher's merged distribution is over its FIRST token (e.g. ``E`` of
        ``E|lla``), whose student counterpart is not the token the student emits first (``Ella``); on matched
        vocabulary columns such groups push the student away from its own target (measured on SmolLM2 -> a task
        BPE student).
        """
        G = self.num_groups
        keep = (torch.bincount(self.student_groups, minlength=G) == 1) & \
            (torch.bincount(self.teacher_groups, minlength=G) == 1)
        new_id = torch.cumsum(keep.long(), 0) - 1
        s_keep, t_keep = keep[self.student_groups], keep[self.teacher_groups]
        return BatchAlignment(student_rows=self.student_rows[s_keep],
                              student_groups=new_id[self.student_groups[s_keep]],
                              teacher_rows=self.teacher_rows[t_keep],
                              teacher_groups=new_id[self.teacher_groups[t_keep]],
                              num_groups=int(keep.sum()), group_example=self.group_example[keep])

    @classmethod
    def build(cls, student_spans: Sequence[Spans], teacher_spans: Sequence[Spans],
              student_completion_start: Sequence[int], teacher_completion_start: Sequence[int],
              student_mask: torch.Tensor, teacher_mask: torch.Tensor) -> BatchAlignment:
        """Align every example and flatten.

        Args:
            student_spans: per example, ``[n_s_b, 2]`` completion token spans (``Rendered.spans``).
            teacher_spans: per example, ``[n_t_b, 2]``.
            student_completion_start: per example, index in the student's ``input_ids`` of the first completion token.
            teacher_completion_start: the same for the teacher.
            student_mask: ``[B, T_s]`` bool target mask from ``shift_targets`` (row j predicts token j+1).
            teacher_mask: ``[B, T_t]`` bool.
        """
        B = len(student_spans)
        if not (len(teacher_spans) == len(student_completion_start) == len(teacher_completion_start) == B
                == student_mask.shape[0] == teacher_mask.shape[0]):
            raise ValueError("BatchAlignment.build: student/teacher spans, completion starts and masks must all have "
                             f"batch size {B}")
        aligns = [align_spans(s, t) for s, t in zip(student_spans, teacher_spans)]
        s_rows = _rows_per_example(student_mask, student_completion_start, [a.student_group.size for a in aligns])
        t_rows = _rows_per_example(teacher_mask, teacher_completion_start, [a.teacher_group.size for a in aligns])
        # Drop groups with a token that has no predictor row (mask false there).
        sg, tg = [], []
        counts = []
        for a, rs, rt in zip(aligns, s_rows, t_rows):
            bad = np.zeros(a.num_groups + 1, dtype=bool)
            bad[a.student_group[rs < 0]] = True
            bad[a.teacher_group[rt < 0]] = True
            bad = bad[:-1]  # index -1 (unaligned tokens) landed in the extra slot
            remap = np.where(bad, -1, np.cumsum(~bad) - 1)
            remap = np.append(remap, -1)
            sg.append(remap[a.student_group])
            tg.append(remap[a.teacher_group])
            counts.append(int((~bad).sum()))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        sgid, srow = _side_index(sg, s_rows, offsets)
        tgid, trow = _side_index(tg, t_rows, offsets)
        device = student_mask.device
        as_t = lambda x: torch.as_tensor(x, dtype=torch.long, device=device)  # noqa: E731
        ex = np.repeat(np.arange(B), counts)
        return cls(as_t(srow), as_t(sgid), as_t(trow), as_t(tgid), int(offsets[-1]), as_t(ex))

    @classmethod
    def from_collated(cls, student_batch: dict, teacher_batch: dict, student_mask: torch.Tensor,
                      teacher_mask: torch.Tensor) -> BatchAlignment:
        """Build from two :func:`crossdistill.data.render.collate_rendered` dicts (``spans``, ``num_completion``,
        ``completion_start``) and the two shifted target masks."""
        def unpack(batch):
            n = batch["num_completion"].tolist()
            spans = batch["spans"].cpu().numpy()
            return [spans[b, : n[b]] for b in range(len(n))], batch["completion_start"].tolist()

        ss, s0 = unpack(student_batch)
        ts, t0 = unpack(teacher_batch)
        return cls.build(ss, ts, s0, t0, student_mask, teacher_mask)


def _rows_per_example(mask: torch.Tensor, starts: Sequence[int], counts: Sequence[int]) -> list[np.ndarray]:
    """Flat target row of completion token c of example b (row ``start_b + c - 1``), ``-1`` where not a target."""
    m = mask.detach().cpu().numpy().astype(bool)
    B, T = m.shape
    flat = np.cumsum(m.reshape(-1)) - 1
    out = []
    for b, (s, n) in enumerate(zip(starts, counts)):
        pos = s - 1 + np.arange(n)
        ok = (pos >= 0) & (pos < T)
        r = np.full(n, -1, dtype=np.int64)
        r[ok] = np.where(m[b, pos[ok]], flat[b * T + pos[ok]], -1)
        out.append(r)
    return out
