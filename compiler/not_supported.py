"""Features other fine-tuning tools have that lfc does not offer yet, by the key users write.

A spec (or an imported LLaMA-Factory config) naming one of these keys is refused with the
reason, not with a plain "unknown key".
"""

from __future__ import annotations

NOT_SUPPORTED_YET: dict[str, str] = {
    "mixture_of_depths": "Mixture-of-Depths is not supported yet",
    "shift_attn": "LongLoRA's shift-short attention is not supported yet",
}
