"""Write tiny random-init frozen models to disk, in the layout the real weights use.

The demo, the tests and the README's main job load these through the wrappers' real `from_pretrained`
paths, so nothing downloads and the loading code is the code that loads the released weights.
"""

from __future__ import annotations

from pathlib import Path

from model.depth import DepthEstimator
from model.text_encoder import TextEncoder
from model.vae import VideoVAE


def write_tiny_pretrained(root: Path, seed: int = 0) -> dict[str, Path]:
    """Save tiny VAE, T5 and Depth-Anything under `root` (deterministic for a seed).

    Layout (diffusers-pipeline-like): root/vae, root/text_encoder, root/tokenizer, root/depth. Each wrapper's
    `from_pretrained` accepts `root` itself or its own folder. Returns those folders by name, plus "root".
    """
    root = Path(root)
    VideoVAE.tiny(seed).save_pretrained(root / "vae")
    TextEncoder.tiny(seed).save_pretrained(root)  # writes root/text_encoder and root/tokenizer
    DepthEstimator.tiny(seed).save_pretrained(root / "depth")
    names = ("vae", "text_encoder", "tokenizer", "depth")
    return {"root": root, **{name: root / name for name in names}}


def write_tiny_vlm(folder: Path, seed: int = 0) -> Path:
    """Save a tiny random-init LLaVA (CLIP vision tower + Llama) and its processor to `folder`, loadable by
    `AutoModelForImageTextToText` / `AutoProcessor.from_pretrained` like a real local vision-language model."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,  # fmt: skip
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    bpe.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    corpus = ["a red car drives down a street at night", "two dogs play in the snow near a lake",
              "describe this video in one detailed sentence the subject the action the scene and the camera"]
    bpe.train_from_iterator(corpus * 3, trainers.BpeTrainer(vocab_size=300,
                            special_tokens=["<pad>", "<s>", "</s>", "<unk>", "<image>"]))  # fmt: skip
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>", extra_special_tokens={"image_token": "<image>"})
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=16)  # fmt: skip
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                       pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"))  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config).eval()
    template = ("{% for m in messages %}USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n"
                "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %}"
                "{% if add_generation_prompt %} ASSISTANT:{% endif %}")  # fmt: skip
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default", chat_template=template,
        num_additional_image_tokens=1,
    )  # fmt: skip
    folder = Path(folder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
