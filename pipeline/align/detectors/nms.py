"""Greedy non-maximum suppression in torch, with the 'union' and 'min' overlaps MTCNN uses."""

from __future__ import annotations

import torch


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, mode: str = "union") -> torch.Tensor:
    """Indices of kept boxes, best score first.

    `union` is intersection over union; `min` divides by the smaller area, which MTCNN's last
    stage uses to drop a small box nested inside a bigger one. Boxes are inclusive pixel boxes
    (x1, y1, x2, y2), hence the +1 in the areas, as in the original cascade.
    """
    if mode not in ("union", "min"):
        raise ValueError(f"nms mode must be 'union' or 'min', got {mode!r}")
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long)
    x1, y1, x2, y2 = boxes.unbind(1)
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = torch.argsort(scores, descending=True)
    keep: list[int] = []
    while order.numel() > 0:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        if rest.numel() == 0:
            break
        w = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest]) + 1).clamp(min=0)
        h = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest]) + 1).clamp(min=0)
        inter = w * h
        if mode == "min":
            overlap = inter / torch.minimum(area[i], area[rest])
        else:
            overlap = inter / (area[i] + area[rest] - inter)
        order = rest[overlap <= threshold]
    return torch.tensor(keep, dtype=torch.long)
