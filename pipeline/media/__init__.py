"""Browser-playable proxies of takes (stage `media`): what Label Studio serves to annotators."""

from __future__ import annotations

from pathlib import Path


def proxy_path(take_id: str, media_dir: Path) -> Path:
    """Where the media stage writes the proxy of `take_id` in `media_dir` (`Layout.media`)."""
    return Path(media_dir) / f"{take_id}.mp4"
