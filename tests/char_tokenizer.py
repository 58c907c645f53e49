"""A 53-token character-level tokenizer for the sampler and stop-token tests. Random-weight models over
it emit EOS (or any one id) often enough within a few tokens that finished and cut rows both occur; over
the embedded 2048-token BPE vocabulary they almost never do."""
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
CHARS = "0123456789+-*/=()\\{}^., \nabcdefghijklmnopqrstuvwxyz"


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """Left-padding fast tokenizer that round-trips text exactly (spaces included)."""
    vocab = {tok: i for i, tok in enumerate([PAD, EOS, UNK] + list(CHARS))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, eos_token=EOS, unk_token=UNK,
                                   padding_side="left")
