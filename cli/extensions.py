"""File extensions the commands read and write, apart from the readers (``cli.audio_io``
imports soundfile and numpy; ``--help`` lists these without them)."""

from __future__ import annotations

from cli.raw import RAW_EXTENSIONS

#: Output extensions and the soundfile format each one means (soundfile alone only knows
#: extensions equal to a format name, so .aif or .oga would otherwise be refused).
EXTENSION_FORMATS = {
    ".wav": "WAV",
    ".wave": "WAV",
    ".flac": "FLAC",
    ".ogg": "OGG",
    ".oga": "OGG",
    ".aif": "AIFF",
    ".aiff": "AIFF",
    ".aifc": "AIFF",
    ".au": "AU",
    ".snd": "AU",
    ".caf": "CAF",
    ".w64": "W64",
    ".rf64": "RF64",
    ".mp3": "MP3",
    ".raw": "RAW",
    ".pcm": "RAW",
}
#: Extensions an output may have.
OUTPUT_EXTENSIONS = frozenset(EXTENSION_FORMATS) | {".npy"}
#: Extensions picked up by default when an INPUT is a directory (raw files only when the
#: command line says how to read them: :data:`cli.raw.RAW_EXTENSIONS`).
INPUT_EXTENSIONS = OUTPUT_EXTENSIONS - RAW_EXTENSIONS
