"""T5 text encoder (frozen): prompts -> 77 padded token embeddings + a keep-mask.

As in the MfM release, prompts are lower-cased and stripped, padded to 77 tokens, and T5 runs WITHOUT an
attention mask over the padded sequence; the keep-mask (tokenizer mask) is applied later, in the DiT's
cross-attention. Valid-token embeddings therefore depend on the padding, and `encode_trimmed` (what
curation stores) keeps exactly the valid rows of that padded run: re-padding them reproduces `encode`.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast, T5Config, T5EncoderModel

MAX_LENGTH = 77

# Fixed corpus for the tiny test tokenizer (lower case, like the prompts it will see).
_TINY_CORPUS = [
    "a red car drives along a coastal road at sunset, waves crash on the rocks below.",
    "a cat sleeps on a grey sofa next to a window while rain falls outside.",
    "a man in a blue jacket walks his dog through a snowy park in the morning.",
    "aerial view of a city street at night with cars and bright neon lights.",
    "a woman slices fresh vegetables on a wooden table in a sunny kitchen.",
    "close-up of a flower opening slowly, its petals moving in a light breeze.",
    "two children run across a green field and fly a yellow kite under a clear sky.",
    "a boat sails on a calm lake surrounded by tall mountains and pine trees.",
    "the camera pans left over an old stone bridge; people cross it with umbrellas.",
    "a bird lands on a branch, looks around, then flies away into the forest.",
    "make the sky purple. turn the dog into a fox. remove the man on the left.",
    "#fps: 16. #task: text-to-video",
    "#fps: 16. #task: image-to-video",
    "#fps: 16. #task: video extending",
    "#fps: 16. #task: image-to-image transition",
    "#fps: 16. #task: video-to-video transition",
    "#fps: 16. #task: video super-resolution",
    "#fps: 16. #task: video colorization",
    "#fps: 16. #task: video inpainting",
    "#fps: 16. #task: video outpainting",
    "#fps: 16. #task: video editing",
    "#fps: 16. #task: text-to-image",
    "#fps: 16. #task: image super-resolution",
    "#fps: 16. #task: image colorization",
    "#fps: 16. #task: image inpainting",
    "#fps: 16. #task: image outpainting",
    "#fps: 16. #task: image editing",
    "natural, vibrant, clean, extremely detailed, high-resolution, 4k",
    "over-saturated, grayscale, b&w, color bleeding, plain, blurry, noise, jpeg compression, lowres",
    "0 1 2 3 4 5 6 7 8 9 10 12 16 24 30 32 48 64 97 128 256 360 480 720 1080",
]


def normalize_prompt(prompt: str) -> str:
    """The release's text preprocessing (diffusers' `_text_preprocessing` without caption cleaning)."""
    return prompt.lower().strip()


def _has_tokenizer_files(folder: Path) -> bool:
    names = ("tokenizer.json", "spiece.model", "tokenizer_config.json")
    return any((folder / name).is_file() for name in names)


class TextEncoder(nn.Module):
    """Frozen `T5EncoderModel` + its tokenizer."""

    def __init__(self, model: T5EncoderModel, tokenizer: PreTrainedTokenizerBase) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | Path,
        tokenizer_path: str | Path | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> TextEncoder:
        """Load T5 + tokenizer.

        `path_or_id`: a pipeline folder holding `text_encoder/` + `tokenizer/` (the release's layout; the
        tokenizer may also sit in `text_encoder/`), a `text_encoder/` folder of such a layout, a plain T5
        folder, or a hub id. `tokenizer_path` overrides where the tokenizer is read from.
        """
        model_path, tok_path = Path(path_or_id), tokenizer_path
        if (model_path / "text_encoder").is_dir():
            model_path = model_path / "text_encoder"
        if tok_path is None and model_path.name == "text_encoder" and model_path.is_dir():
            sibling = model_path.parent / "tokenizer"
            if sibling.is_dir():
                tok_path = sibling
            elif not _has_tokenizer_files(model_path):
                raise FileNotFoundError(
                    f"text encoder {path_or_id}: no tokenizer files in {model_path} and no {sibling}; "
                    "pass tokenizer_path"
                )
        model_src = str(model_path) if model_path.exists() else str(path_or_id)
        model = T5EncoderModel.from_pretrained(model_src, dtype=dtype, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(str(tok_path) if tok_path is not None else model_src)
        return cls(model, tokenizer)

    @classmethod
    def tiny(cls, seed: int = 0) -> TextEncoder:
        """Random-init 2-layer T5 (d_model 32) with a BPE tokenizer trained here on a fixed corpus."""
        tokenizer = _train_tiny_tokenizer()
        config = T5Config(
            vocab_size=len(tokenizer),
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=32,
            dropout_rate=0.0,
            feed_forward_proj="gated-gelu",  # T5 v1.1 / flan-t5, like the real encoder
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
            use_cache=False,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = T5EncoderModel(config)
        return cls(model, tokenizer)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write the pipeline layout `directory/text_encoder/` + `directory/tokenizer/`."""
        directory = Path(directory)
        self.model.save_pretrained(str(directory / "text_encoder"), safe_serialization=True)
        self.tokenizer.save_pretrained(str(directory / "tokenizer"))

    @property
    def dim(self) -> int:
        return int(self.model.config.d_model)

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> (token ids (B, 77) long, keep_mask (B, 77) bool), after `normalize_prompt`."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError(f"prompts must be a list of str; got {type(prompts).__name__}: {prompts!r:.200}")
        tokens = self.tokenizer(
            [normalize_prompt(p) for p in prompts],
            padding="max_length",
            max_length=MAX_LENGTH,
            truncation=True,
            return_tensors="pt",
        )
        return tokens.input_ids, tokens.attention_mask.bool()

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> (embeddings (B, 77, D) float32, keep_mask (B, 77) bool). T5 runs unmasked."""
        if len(prompts) == 0:
            return torch.zeros(0, MAX_LENGTH, self.dim), torch.zeros(0, MAX_LENGTH, dtype=torch.bool)
        input_ids, keep_mask = self.tokenize(prompts)
        hidden = self.model(input_ids=input_ids.to(self.model.device)).last_hidden_state  # (B, 77, D)
        return hidden.float(), keep_mask.to(hidden.device)

    def encode_trimmed(self, prompts: list[str]) -> list[torch.Tensor]:
        """Prompts -> per prompt its valid-token embeddings (n_tokens, D) float16, on the CPU, for storage."""
        embeddings, keep_mask = self.encode(prompts)
        lengths = keep_mask.sum(dim=1).tolist()
        return [emb[:n].half().cpu() for emb, n in zip(embeddings, lengths)]


def _train_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A deterministic T5-style BPE tokenizer: <pad>=0, </s>=1, <unk>=2, '</s>' appended, right padding.

    BPE, not T5's Unigram: the `tokenizers` Unigram trainer is not deterministic across processes.
    """
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=["<pad>", "</s>", "<unk>"],
        initial_alphabet=list(string.ascii_lowercase + string.digits + string.punctuation + "▁"),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_TINY_CORPUS, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", tokenizer.token_to_id("</s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=MAX_LENGTH,
    )
