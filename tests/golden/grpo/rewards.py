"""Reward functions of this GRPO project, summed with config.yaml's reward_weights.

Imported by train.py. GRPOTrainer calls each with the prompts, the sampled completions (text)
and the dataset's other columns as keyword lists (`reference`: the row's reference answer);
each returns one float per completion.
"""

import re

from reward_functions.brevity import no_rambling


def regex_reward_0(completions: list[str], **kwargs) -> list[float]:
    """1.0 when the completion matches the pattern (re.search), else 0.0."""
    pattern = re.compile("^[A-Z]")
    return [1.0 if pattern.search(text) else 0.0 for text in completions]


def length_reward_1(completions: list[str], **kwargs) -> list[float]:
    """1.0 at 40 characters, falling linearly to 0.0 at 0 and 80."""
    target = 40
    return [max(0.0, 1.0 - abs(len(text) - target) / target) for text in completions]


def exact_match_reward_2(
    completions: list[str], reference: list[str], **kwargs
) -> list[float]:
    """1.0 when the completion, stripped, equals the row's reference answer, else 0.0."""
    pairs = zip(completions, reference, strict=True)
    return [1.0 if text.strip() == answer.strip() else 0.0 for text, answer in pairs]


# In the order of the spec's stage.rewards; config.yaml's reward_weights has one weight each.
REWARD_FUNCTIONS = [regex_reward_0, length_reward_1, exact_match_reward_2, no_rambling]
