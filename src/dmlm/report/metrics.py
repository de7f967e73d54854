"""Study metrics computed from per-run WERs: relative benefit, perceptual score, bootstrap CIs.

Relative benefit (RB) of a modality set M over audio only, for the same backbone, training
noise, loss weights, seed and test SNR::

    RB = (WER_A - WER_{A+M}) / WER_A

positive when the extra modalities lower the WER. It is reported beside the absolute difference
``WER_A - WER_{A+M}``. RB is undefined (NaN) where ``WER_A`` is 0. (Our reading of the study; the
paper's exact formula was not available to us.)

Perceptual score of a modality m (Gat, Schwartz and Schwing, "Perceptual Score: What Data
Modalities Does Your Model Perceive?", NeurIPS 2021): evaluate the same trained model once more
with m's inputs permuted across the test items, so that m no longer belongs to its utterance, and
measure how much worse it does. Gat et al. define it on accuracy, ``Acc(D) - Acc(D with m
permuted)``, optionally divided by ``Acc(D)``. With WER as the error measure::

    P_m      = WER_{m permuted} - WER          (raw; > 0: the model uses m)
    P_m_norm = (WER_{m permuted} - WER) / WER  (normalised by the unpermuted WER; NaN if WER = 0)

We use one seeded derangement (no item keeps its own input) rather than Gat et al.'s average over
several random permutations. Normalising by WER (not by 1 - WER, the accuracy analogue) follows
the project's design notes and stays defined when WER exceeds 1.

Confidence intervals: a percentile bootstrap over test utterances (and over seeds when a cell has
several). One resample draws the utterances with replacement and, when there are several seeds,
the seeds with replacement; the corpus WER of a seed on the resample is
``sum(errors of the drawn utterances) / sum(their reference words)``; the statistic (mean WER,
mean RB, mean perceptual score) is averaged over the drawn seeds. The two runs of an RB pair (and
a model and its permuted evaluation) share one resample, so the interval is paired. Resamples
come from ``numpy.random.default_rng(seed)``: the same seed gives the same interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def relative_benefit(wer_audio, wer_multimodal):
    """RB = (WER_A - WER_{A+M}) / WER_A; NaN where WER_A == 0 (nothing left to gain).

    Scalars give a float; arrays (e.g. bootstrap resamples) give an array, element by element."""
    wer_audio = np.asarray(wer_audio, dtype=float)
    wer_multimodal = np.asarray(wer_multimodal, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        rb = np.where(wer_audio == 0, np.nan, (wer_audio - wer_multimodal) / wer_audio)
    return float(rb) if rb.ndim == 0 else rb


def perceptual_score(wer, wer_permuted):
    """(raw, normalised) perceptual score from the WER without and with the modality permuted
    (see the module docstring); the normalised score is NaN where WER == 0."""
    wer = np.asarray(wer, dtype=float)
    raw = np.asarray(wer_permuted, dtype=float) - wer
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = np.where(wer == 0, np.nan, raw / wer)
    if raw.ndim == 0:
        return float(raw), float(norm)
    return raw, norm


@dataclass(frozen=True)
class Resamples:
    """Bootstrap draws: ``utterances[b, u]`` and ``seeds[b, s]`` count how often utterance u and
    seed s are drawn in resample b (each row sums to the number of utterances / seeds)."""

    utterances: np.ndarray
    seeds: np.ndarray


def draw_resamples(n_utterances: int, n_seeds: int, resamples: int, seed: int) -> Resamples:
    """Seeded resampling counts; seeds are resampled only when there are several."""
    if n_utterances < 1 or n_seeds < 1 or resamples < 1:
        raise ValueError(f"bootstrap needs utterances, seeds and resamples >= 1, "
                         f"got {n_utterances}, {n_seeds}, {resamples}")
    rng = np.random.default_rng(seed)
    utterances = rng.multinomial(n_utterances, np.full(n_utterances, 1 / n_utterances), size=resamples)
    if n_seeds == 1:
        seeds = np.ones((resamples, 1), dtype=np.int64)
    else:
        seeds = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=resamples)
    return Resamples(utterances=utterances, seeds=seeds)


def corpus_wer_of(errors: np.ndarray, ref_words: np.ndarray) -> np.ndarray:
    """Corpus WER per seed: ``errors`` is (seeds, utterances), ``ref_words`` (utterances,)."""
    errors = np.atleast_2d(np.asarray(errors, dtype=float))
    return errors.sum(axis=1) / float(np.sum(ref_words))


def resampled_wer(errors: np.ndarray, ref_words: np.ndarray, draws: Resamples) -> np.ndarray:
    """Corpus WER of each seed on each resample: (resamples, seeds)."""
    errors = np.atleast_2d(np.asarray(errors, dtype=float))
    with np.errstate(divide="ignore", invalid="ignore"):
        return (draws.utterances @ errors.T) / (draws.utterances @ np.asarray(ref_words, dtype=float))[:, None]


def seed_mean(per_seed: np.ndarray, draws: Resamples) -> np.ndarray:
    """Average over the drawn seeds of a (resamples, seeds) statistic (NaN if any drawn seed's is)."""
    weights = draws.seeds.astype(float)
    values = np.where(weights > 0, per_seed, 0.0)
    undefined = ((weights > 0) & np.isnan(per_seed)).any(axis=1)
    mean = (values * weights).sum(axis=1) / weights.sum(axis=1)
    return np.where(undefined, np.nan, mean)


def interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of the defined (finite) resamples; NaN if none is defined."""
    samples = np.asarray(samples, dtype=float)
    samples = samples[np.isfinite(samples)]
    if not len(samples):
        return np.nan, np.nan
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def wer_with_ci(errors, ref_words, draws: Resamples, confidence: float) -> tuple[float, float, float]:
    """(mean over seeds of the corpus WER, CI low, CI high)."""
    point = float(np.mean(corpus_wer_of(errors, ref_words)))
    return (point, *interval(seed_mean(resampled_wer(errors, ref_words, draws), draws), confidence))


def rb_with_ci(errors_audio, errors_multimodal, ref_words, draws: Resamples, confidence: float):
    """(mean over seeds of RB, CI low, CI high); row s of both error arrays is the same seed."""
    point = relative_benefit(corpus_wer_of(errors_audio, ref_words), corpus_wer_of(errors_multimodal, ref_words))
    samples = relative_benefit(resampled_wer(errors_audio, ref_words, draws),
                               resampled_wer(errors_multimodal, ref_words, draws))
    return (float(np.mean(point)), *interval(seed_mean(samples, draws), confidence))


def perceptual_with_ci(errors, errors_permuted, ref_words, draws: Resamples, confidence: float):
    """(raw score, normalised score, CI low, CI high of the raw score), means over seeds."""
    raw, norm = perceptual_score(corpus_wer_of(errors, ref_words), corpus_wer_of(errors_permuted, ref_words))
    samples, _ = perceptual_score(resampled_wer(errors, ref_words, draws),
                                  resampled_wer(errors_permuted, ref_words, draws))
    return (float(np.mean(raw)), float(np.mean(norm)), *interval(seed_mean(samples, draws), confidence))
