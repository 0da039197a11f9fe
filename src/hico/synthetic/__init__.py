"""Everything made up for tests, demos and the toy model, each module named after what it makes:

    videos       -> H.264/GIF/frame-folder videos whose frames carry their index as a code; solid-colour tasks
    pictures     -> coloured shapes with a symbol (the needles) and the words that ask about them
    tasks        -> seeded training videos with questions (LLaVA-style data for `hico train`), demo videos
    checkpoints  -> tiny random checkpoints in the official layout, and small tokenizers
    benchmarks   -> mini benchmarks in the official evaluation annotation formats, over such videos
"""
