"""A user reward function for examples/grpo.yaml: penalise repeated words."""


def no_rambling(prompts: list[str], completions: list[str], **kwargs) -> list[float]:
    """1.0 for a completion without a repeated word, less the more words repeat."""
    scores = []
    for text in completions:
        words = text.lower().split()
        scores.append(len(set(words)) / len(words) if words else 0.0)
    return scores
