"""Blind listening tests: build a static page from generated sets, then score the ratings.

``lora-audio listen build RUN_DIRS... -o test/`` copies every clip under an opaque random name
into ``test/audio/``, writes a self-contained page (``index.html``, ``listen.js``,
``listen.css`` and the generated trial list ``trials.js``) and a separate ``key.json`` that maps
the opaque names back to systems and stimuli. The page never loads the key, so raters cannot
tell which system made which clip.

``lora-audio listen score RATINGS... --key test/key.json`` resolves the ratings through the key
and reports MOS per system with 95 % t-intervals, the relative change against the base system,
A/B preference rates with Wilson intervals and Krippendorff's alpha between raters.
"""

from __future__ import annotations


class ListenError(Exception):
    """Bad input for a listening test. ``str(err)`` is one line naming the file and the fix."""


#: ``format`` fields of the three JSON files, checked when they are read back.
KEY_FORMAT = "lora-audio-listen-key"
TEST_FORMAT = "lora-audio-listen-test"
RATINGS_FORMAT = "lora-audio-listen-ratings"

#: The 1-5 questions asked for every clip: id -> (question, labels for 1..5).
QUESTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "musicality": (
        "How musical is this clip?",
        ("Bad", "Poor", "Fair", "Good", "Excellent"),
    ),
    "style": (
        "How well does it match the style of the reference?",
        ("Not at all", "Slightly", "Somewhat", "Mostly", "Exactly"),
    ),
}

__all__ = ["KEY_FORMAT", "QUESTIONS", "RATINGS_FORMAT", "TEST_FORMAT", "ListenError"]
