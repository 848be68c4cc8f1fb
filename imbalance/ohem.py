"""Online hard example mining (OHEM) for a dense detector, the baseline of the Focal Loss paper.

OHEM (Shrivastava et al., CVPR 2016) trains the classifier on a minibatch of the examples it
currently gets most wrong. The Focal Loss paper (Lin et al., Sec. 5.1) runs it on RetinaNet with
the cross-entropy loss, per image:

1. score every anchor by its classification loss (summed over the K sigmoid outputs);
2. non-maximum suppression among the anchors, the loss as the score, so that neighbouring anchors
   whose losses are correlated do not fill the minibatch;
3. the minibatch is the ``batch_size`` highest-loss survivors; optionally (the variant of SSD)
   at most one positive per ``neg_pos_ratio`` negatives, to keep positives in it.

The paper tunes the batch size (128, 256, 512 per image) and the NMS threshold (0.5, 0.7); its
best OHEM, which the focal loss beats by 3.2 AP (its Table 1d), has 128, 0.5 and no ratio: the
defaults here.

The classification loss is then computed on the minibatch only; the box loss is unchanged (every
positive anchor). Unlike the focal loss, which down-weights easy examples, OHEM discards every
example outside the minibatch.

:func:`hard_examples` makes one image's choice; :class:`OHEM` holds the settings and is what
:class:`imbalance.models.retinanet.RetinaNetHead` takes. NMS runs on the anchors themselves (the
analogue of OHEM's NMS among RoIs, which are the second stage's inputs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import nms

__all__ = ["OHEM", "hard_examples"]


def hard_examples(loss: Tensor, boxes: Tensor, candidate_mask: Tensor, positive: Tensor,
                  batch_size: int, nms_threshold: float | None = 0.5,
                  neg_pos_ratio: float | None = None) -> Tensor:
    """OHEM's minibatch of one image: the highest-loss candidates after NMS.

    Args:
        loss (Tensor[N], float): each example's loss (non-finite values are never chosen).
        boxes (Tensor[N, 4], float): the examples' boxes ``(x1, y1, x2, y2)``, for the NMS.
        candidate_mask (Tensor[N], bool): the examples that may be chosen (e.g. not ignored).
        positive (Tensor[N], bool): the positive examples (used only with ``neg_pos_ratio``).
        batch_size: the minibatch size B.
        nms_threshold: IoU above which an example is suppressed by a higher-loss one; ``None``
            skips the NMS (the B highest losses; ties go to the lower index).
        neg_pos_ratio: ``None``: the B highest losses, whatever their labels. A number r: at
            most ``floor(B / (1 + r))`` positives, the highest-loss ones, and at most
            ``r * max(1, positives chosen)`` negatives, also within B.

    Returns:
        Tensor[B'], int64: ascending indices into ``loss``, ``B' <= B``.
    """
    n = loss.shape[0]
    if loss.dim() != 1 or boxes.shape != (n, 4):
        raise ValueError(f"need loss (N,) and boxes (N, 4); got {tuple(loss.shape)} and "
                         f"{tuple(boxes.shape)}")
    if candidate_mask.shape != (n,) or positive.shape != (n,):
        raise ValueError(f"candidate_mask and positive must have shape ({n},); got "
                         f"{tuple(candidate_mask.shape)} and {tuple(positive.shape)}")
    _check(batch_size, nms_threshold, neg_pos_ratio)
    inds = (candidate_mask & torch.isfinite(loss)).nonzero().squeeze(1)
    inds = inds[torch.sort(loss[inds], descending=True, stable=True).indices]
    # with a ratio 1:r, the minibatch takes at most floor(B / (1 + r)) positives
    pos_cap = None if neg_pos_ratio is None else math.floor(batch_size / (1 + neg_pos_ratio))
    if nms_threshold is not None:
        inds = _suppress(inds, boxes, positive, batch_size, nms_threshold, pos_cap)
    if neg_pos_ratio is None:
        chosen = inds[:batch_size]
    else:
        is_pos = positive[inds]
        pos, neg = inds[is_pos], inds[~is_pos]
        num_pos = min(pos.numel(), pos_cap)
        num_neg = min(neg.numel(), batch_size - num_pos,
                      math.floor(neg_pos_ratio * max(1, num_pos)))
        chosen = torch.cat([pos[:num_pos], neg[:num_neg]])
    return chosen.sort().values


def _suppress(order: Tensor, boxes: Tensor, positive: Tensor, batch_size: int,
              threshold: float, pos_cap: int | None) -> Tensor:
    """Greedy NMS over ``order`` (indices by decreasing loss); the survivors, in that order.

    Greedy NMS decides an example from the higher-loss ones alone, so the survivors among the
    first m examples are the same whether the rest is there or not. The minibatch needs only
    the first B survivors (with a ratio, ``pos_cap`` positives and B negatives), so NMS runs on
    a prefix of 4 B examples, doubled until it yields them: exact, and on an image of 100k
    anchors far cheaper than NMS over all of them.
    """
    m = 4 * batch_size
    while True:
        head = order[:m]
        # ranks as scores: NMS visits the examples in exactly the order given, ties included
        ranks = torch.arange(head.numel(), 0, -1, dtype=torch.float32, device=head.device)
        kept = head[nms(boxes[head].float(), ranks, threshold)]
        if m >= order.numel():
            return kept
        if pos_cap is None:
            if kept.numel() >= batch_size:
                return kept
        else:
            pos = int(positive[kept].sum())
            if pos >= pos_cap and kept.numel() - pos >= batch_size:
                return kept
        m *= 2


def _check(batch_size: int, nms_threshold: float | None, neg_pos_ratio: float | None) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if nms_threshold is not None and not 0.0 < nms_threshold <= 1.0:
        raise ValueError(f"nms_threshold must be in (0, 1] or None, got {nms_threshold!r}")
    if neg_pos_ratio is not None and not (math.isfinite(neg_pos_ratio) and neg_pos_ratio > 0):
        raise ValueError(f"neg_pos_ratio must be a number > 0 or None, got {neg_pos_ratio!r}")


@dataclass(frozen=True)
class OHEM:
    """The settings of online hard example mining (:func:`hard_examples`), per image.

    The defaults are the Focal Loss paper's best OHEM: a minibatch of 128 anchors per image, NMS
    at 0.5, no positive:negative ratio (its "OHEM 1:3" is ``neg_pos_ratio=3``).
    """

    batch_size: int = 128
    nms_threshold: float | None = 0.5
    neg_pos_ratio: float | None = None

    def __post_init__(self) -> None:
        _check(self.batch_size, self.nms_threshold, self.neg_pos_ratio)

    def select(self, loss: Tensor, boxes: Tensor, candidate_mask: Tensor,
               positive: Tensor) -> Tensor:
        """:func:`hard_examples` with these settings."""
        return hard_examples(loss, boxes, candidate_mask, positive, self.batch_size,
                             self.nms_threshold, self.neg_pos_ratio)

    def mask(self, loss: Tensor, boxes: Tensor | list[Tensor], candidate_mask: Tensor,
             positive: Tensor) -> Tensor:
        """The minibatches of a batch of images as a mask: :meth:`select` per image.

        Args:
            loss (Tensor[B, N], float), candidate_mask and positive (Tensor[B, N], bool): per
                image, as :func:`hard_examples` takes them.
            boxes (Tensor[B, N, 4] or a list of B Tensor[N, 4]): the examples' boxes.

        Returns:
            Tensor[B, N], bool: True for the examples in their image's minibatch.
        """
        chosen = torch.zeros_like(candidate_mask, dtype=torch.bool)
        for i in range(loss.shape[0]):
            chosen[i, self.select(loss[i], boxes[i], candidate_mask[i], positive[i])] = True
        return chosen
