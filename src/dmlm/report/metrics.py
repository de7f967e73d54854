"""Study metrics computed from per-run WERs.

Relative benefit (RB) of a modality set M over audio only, for the same backbone, training
noise, loss weights, seed and test SNR::

    RB = (WER_A - WER_{A+M}) / WER_A

positive when the extra modalities lower the WER. It is reported beside the absolute difference
``WER_A - WER_{A+M}``. RB is undefined (NaN) where ``WER_A`` is 0. (Our reading of the study; the
paper's exact formula was not available to us.)
"""

from __future__ import annotations

import math


def relative_benefit(wer_audio: float, wer_multimodal: float) -> float:
    """RB = (WER_A - WER_{A+M}) / WER_A; NaN when WER_A == 0 (nothing left to gain)."""
    if wer_audio == 0:
        return math.nan
    return (wer_audio - wer_multimodal) / wer_audio
