"""Small word-level tokenizers built in-process, with and without BOS and chat templates."""

from __future__ import annotations

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "<unk>"]
WORDS = [
    *("hello", "world", "good", "day", "yes", "no", "system", "user", "assistant", "you"),
    *("are", "helpful", "the", "a", "sea", "is", "blue", "i", "like", "it", "not"),
    *(".", ",", "!", "?", "\n"),
]
VOCAB = {tok: i for i, tok in enumerate(SPECIALS)}
for w in WORDS:
    VOCAB.setdefault(w, len(VOCAB))

#: ChatML without a default system prompt.
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
#: A template that writes BOS itself (as Llama 3 does) and trims the content.
BOS_TEMPLATE = (
    "<s>{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}"
    "<|im_end|>{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def word_tokenizer(
    *, bos: bool = False, chat_template: str | None = None
) -> PreTrainedTokenizerFast:
    """Splits on spaces (and keeps newlines and punctuation as tokens)."""
    tok = Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    # Like many real tokenizers, drop a control character (here BEL) during normalisation.
    tok.normalizer = normalizers.Replace("\x07", "")
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", VOCAB["<s>"])]
        )
    out = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    if chat_template:
        out.chat_template = chat_template
    return out


def ids(*tokens: str) -> list[int]:
    return [VOCAB[t] for t in tokens]
