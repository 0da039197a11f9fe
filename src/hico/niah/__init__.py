"""Needle in a video haystack (NIAH): single- and multi-hop, in the official record formats.

    records  -> load the official (or synthetic) needle annotations with their images
    synthetic-> an offline procedural needle set in the same formats
    build    -> a grid of frame counts x depths: a manifest, plus real video files in video mode
    run      -> answer every case with a hico model (resumable JSONL results)
    report   -> heat-map PNG and Markdown tables
"""
