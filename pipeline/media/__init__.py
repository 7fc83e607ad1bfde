"""Browser-playable proxies of takes (stage `media`): what Label Studio serves to annotators."""

from __future__ import annotations

from pathlib import Path

from pipeline import paths


def proxy_path(take_id: str, media_dir: Path | None = None) -> Path:
    """Where the media stage writes the proxy of `take_id` (it exists once the stage has run)."""
    return Path(media_dir if media_dir is not None else paths.MEDIA) / f"{take_id}.mp4"
