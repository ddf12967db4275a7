"""Number formats the CLI and the report share (torch-free: the report imports this)."""

from __future__ import annotations


def fmt_flops(flops: float | int | None) -> str:
    """One rule for every place that prints FLOPs (`cifarlens complexity` and the report):
    GFLOPs when >= 0.1 G (the seed's unit, '0.65 GFLOPs'), else MFLOPs, so a tiny model does
    not print '0.01 GFLOPs'; plain FLOPs below 0.1 M."""
    if flops is None:
        return "n/a"
    f = float(flops)
    if f >= 1e8:
        return f"{f / 1e9:.2f} GFLOPs"
    if f >= 1e5:
        return f"{f / 1e6:.2f} MFLOPs"
    return f"{f:,.0f} FLOPs"
