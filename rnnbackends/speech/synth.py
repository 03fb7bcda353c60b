"""eSpeak NG through ctypes, from the ``espeakng-loader`` wheel (``pip install 'rnnbackends[speech]'``).

The wheel bundles the library and its voice data; ``Synthesizer.speak(text)`` returns 16-bit PCM at the
library's rate (22,050 Hz) as float32 samples in [-1, 1]. Only corpus generation needs it. The output depends on
the random seed (breathy and whispering variants draw noise) and on what the library said before in this process
(its waveform generator keeps phases from one call to the next): the same calls in a fresh process give the same
samples.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

AUDIO_OUTPUT_SYNCHRONOUS = 2
CHARS_UTF8 = 1
RATE, VOLUME, PITCH, RANGE = 1, 2, 3, 4                       # espeak_PARAMETER values
CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
ACCENTS = ("en", "en-us", "en-029", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-x-rp",
           "en-us-nyc")
"""eSpeak NG's English voices (accents); a voice is an accent with a variant, ``en-us+f3``."""
RANDOM_VARIANT = "random-"


def random_variant(rng):
    """The text of an eSpeak NG variant file with random formants (frequency, height, width in % of the accent's),
    pitch, flutter, roughness, voicing and consonant strength, sometimes the Klatt synthesiser or breathiness."""
    lines = ["language variant", f"pitch {int(rng.uniform(60, 180))} {int(rng.uniform(190, 300))}"]
    for k in range(9):
        frequency = rng.uniform(70, 130) if k <= 5 else 100
        lines.append(f"formant {k} {frequency:.0f} {rng.uniform(50, 150):.0f} {rng.uniform(50, 150):.0f}")
    lines += [f"flutter {int(rng.uniform(0, 20))}", f"roughness {int(rng.integers(0, 7))}",
              f"voicing {int(rng.uniform(70, 160))}",
              f"consonants {int(rng.uniform(70, 130))} {int(rng.uniform(70, 130))}"]
    if rng.random() < 0.25:
        lines.append(f"klatt {int(rng.integers(1, 7))}")
    if rng.random() < 0.1:
        lines += ["voicing 20", "breath 75 75 50 40 15 10", "breathw 150 150 200 200 400 400"]
    return "\n".join(lines) + "\n"


class Synthesizer:
    """One initialised eSpeak NG library: pick a voice, rate and pitch, and synthesise text to a waveform."""

    _instance = None

    def __init__(self, data_path=None):
        try:
            import espeakng_loader
        except ImportError:
            raise ValueError("making a speech corpus needs eSpeak NG: pip install 'rnnbackends[speech]'") from None
        self.data_path = Path(data_path or espeakng_loader.get_data_path())
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self.lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                          ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.sample_rate = self.lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                                      str(self.data_path).encode(), 0)
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed with data at {self.data_path}")
        self.chunks = []
        self.callback = CALLBACK(self._collect)                  # kept alive as long as the library may call it
        self.lib.espeak_SetSynthCallback(self.callback)

    @classmethod
    def shared(cls, data_path=None):
        """The process's one synthesiser (eSpeak NG keeps global state), reading voices from ``data_path``."""
        if cls._instance is None:
            cls._instance = cls(data_path)
        return cls._instance

    @staticmethod
    def bundled_data_path():
        """The voice data shipped in the wheel."""
        import espeakng_loader
        return Path(espeakng_loader.get_data_path())

    def _collect(self, samples, count, events):
        """Synthesis callback: keep ``count`` 16-bit samples; 0 means go on."""
        if count > 0:
            self.chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
        return 0

    def variants(self):
        """The names of the voice variants shipped with the data (``m1``, ``f3``, ``klatt``, ...)."""
        return sorted(p.name for p in (self.data_path / "voices" / "!v").iterdir()
                      if p.is_file() and not p.name.startswith(RANDOM_VARIANT))

    def speak(self, text, voice="en-us", rate=175, pitch=50, pitch_range=50, seed=0):
        """text -> float32 samples (N,) at ``self.sample_rate``; rate in words per minute, pitch and range 0-100."""
        self.lib.espeak_ng_SetRandSeed(seed)
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice {voice!r}")
        for parameter, value in ((RATE, rate), (PITCH, pitch), (RANGE, pitch_range), (VOLUME, 100)):
            self.lib.espeak_SetParameter(parameter, int(value), 0)
        self.chunks = []
        encoded = text.encode("utf-8") + b"\0"
        if self.lib.espeak_Synth(encoded, len(encoded), 0, 1, 0, CHARS_UTF8, None, None) != 0:
            raise RuntimeError(f"espeak_Synth failed on {text!r}")
        pcm = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)
        return pcm.astype(np.float32) / 32768.0
