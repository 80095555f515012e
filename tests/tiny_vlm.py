"""Build a tiny random-weight Qwen3-VL checkpoint on disk, for tests and benchmarks.

The project's machines cannot reach a model hub, and CI has no GPU, yet the
in-process backend must be exercised through exactly the code path that loads
the real 8B model (``AutoProcessor`` + ``AutoModelForImageTextToText``). This
writes a complete checkpoint (config, weights, byte-level BPE tokenizer with
Qwen's special tokens, chat template, image and video processors) of a model
with a few small layers. Its output is gibberish, which is what the parser's
fallback is for. ``full_size=True`` keeps Qwen3-VL-8B's shapes (random weights)
so latency can be measured on a GPU where the real weights are unavailable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "<|im_start|>{{ message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

_CORPUS = [
    "Chair ahead, one metre, slightly left. Stairs going down at two o'clock.",
    "The sign says EXIT. A door is open on the right. Bicycle parked against the wall.",
    '{"hazards": [{"label": "pole", "direction": "ahead", "distance_m": 2}], "signs": []}',
    "I cannot tell from this picture. The street is clear. A person is approaching.",
    "Read the sign. Is the door open? What is in front of me? Where is the crossing?",
]


def build_tiny_qwen3_vl(path: Path, *, full_size: bool = False, seed: int = 0) -> Path:
    """Write the checkpoint to ``path`` (created) and return it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        AutoModelForImageTextToText,
        PreTrainedTokenizerFast,
        Qwen3VLConfig,
        Qwen3VLProcessor,
    )
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600 if not full_size else 2000,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    token_ids = tokenizer.get_vocab()
    ids: dict[str, int] = {tok: token_ids[tok] for tok in SPECIAL_TOKENS}

    if full_size:
        # Qwen3-VL-8B-Instruct's shapes (config.json of the published checkpoint).
        text = dict(
            hidden_size=4096,
            intermediate_size=12288,
            num_hidden_layers=36,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=128,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 5_000_000.0,
                "mrope_section": [24, 20, 20],
                "mrope_interleaved": True,
            },
        )
        vision = dict(
            depth=27,
            hidden_size=1152,
            intermediate_size=4304,
            num_heads=16,
            out_hidden_size=4096,
            deepstack_visual_indexes=[8, 16, 24],
        )
        vocab = 151936
    else:
        # head_dim 16 needs an mrope_section summing to 8.
        text = dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [2, 3, 3],
                "mrope_interleaved": True,
            },
        )
        vision = dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=64,
            deepstack_visual_indexes=[0, 1],
            num_position_embeddings=256,
        )
        vocab = len(tokenizer)
    config = Qwen3VLConfig(
        text_config={**text, "vocab_size": vocab, "max_position_embeddings": 4096},
        vision_config={
            **vision,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    text_config: Any = config.text_config
    text_config.eos_token_id = ids["<|im_end|>"]
    text_config.pad_token_id = ids["<|endoftext|>"]
    torch.manual_seed(seed)
    dtype = torch.bfloat16 if full_size else torch.float32
    model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(path)

    pixels = {"shortest_edge": 32 * 32, "longest_edge": 2048 * 2048}
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(
            patch_size=16, merge_size=2, temporal_patch_size=2, size=pixels
        ),
        video_processor=Qwen3VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(path)
    return path
