"""In-graph BERT (uncased) tokenizer that matches HuggingFace's BertTokenizer.

`BertTokenizerTF` runs entirely on TensorFlow ops (`tf.strings` and
`tensorflow_text`), so it exports with a SavedModel and needs no Python at
serving time; the vocabulary is a `tf.saved_model.Asset`, so it lands in the
SavedModel's `assets/` directory.

It reproduces the original pipeline step by step; an off-the-shelf
`tf_text.BertTokenizer(lower_case=True)` does not (it NFKC-case-folds, turns
control characters into spaces, stops at NUL bytes, limits words by bytes and
splits literal special tokens):

1. literal special tokens ("[CLS]", "[SEP]", "[MASK]", "[UNK]", "[PAD]") are
   cut out of the raw text and map to their own ids;
2. clean text: ``\\t\\n\\r``, ``\\p{Zs}``, U+2028 and U+2029 become spaces;
   control, format and private-use characters and U+FFFD are deleted;
3. CJK ideographs are surrounded by spaces;
4. NFD, then combining marks (``\\p{Mn}``) are dropped;
5. per-character lowercasing (no case folding, no final sigma);
6. split on whitespace and on punctuation (ASCII non-alphanumerics plus
   ``\\p{P}``), keeping the punctuation;
7. WordPiece, with "[UNK]" for a word over 100 characters or one that the
   vocabulary cannot cover;
8. truncation to ``max_length`` tokens including "[CLS]" and "[SEP]".

The original classifies characters with older Unicode tables than RE2 and
ICU; the few hundred characters where that matters are listed below.
"""

from __future__ import annotations

import re

import tensorflow as tf
import tensorflow_text as tf_text

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_CHARS_PER_WORD = 100

_SPECIAL = "|".join(re.escape(token) for token in SPECIAL_TOKENS)
_WHITESPACE = r"[\t\n\r\p{Zs}\x{2028}\x{2029}]"
# RE2's \p{C} is Cc|Cf|Co|Cs without Cn: the original keeps unassigned code
# points too. U+1734 is a combining mark (Mn) to the original, Mc to RE2.
_DELETED = r"[\p{C}\x{FFFD}\x{1734}]"
# The original classifies characters with Unicode 8-era tables (Rust crate
# unicode_categories); RE2 and ICU in TensorFlow are newer. Found by
# tokenizing every code point in context with both: these characters are
# letters to the original but punctuation, combining marks or format
# characters here. None is in the vocabulary, so each becomes U+FFFF, a
# non-vocabulary character that both sides treat as a letter.
_OLD_UNICODE_LETTERS = (
    r"["
    r"\x{61D}\x{7FD}\x{890}-\x{891}\x{898}-\x{89F}\x{8CA}-\x{8E2}"
    r"\x{9FD}-\x{9FE}\x{A76}\x{AFA}-\x{AFF}\x{B55}\x{C04}\x{C3C}\x{C77}\x{C84}"
    r"\x{D00}\x{D3B}-\x{D3C}\x{D81}\x{EBA}\x{ECE}\x{180F}\x{1885}-\x{1886}"
    r"\x{1ABF}-\x{1ACE}\x{1B7D}-\x{1B7E}\x{1DF6}-\x{1DFB}\x{2E43}-\x{2E4F}"
    r"\x{2E52}-\x{2E5D}\x{A82C}\x{A8C5}\x{A8FF}\x{A9BD}\x{10D24}-\x{10D27}"
    r"\x{10EAB}-\x{10EAD}\x{10EFD}-\x{10EFF}\x{10F46}-\x{10F50}"
    r"\x{10F55}-\x{10F59}\x{10F82}-\x{10F89}\x{11070}\x{11073}-\x{11074}"
    r"\x{110C2}\x{110CD}\x{111CF}\x{1123E}\x{11241}\x{1133B}"
    r"\x{11438}-\x{1143F}\x{11442}-\x{11444}\x{11446}\x{1144B}-\x{1144F}"
    r"\x{1145A}-\x{1145B}\x{1145D}-\x{1145E}\x{11660}-\x{1166C}\x{116B9}"
    r"\x{1182F}-\x{11837}\x{11839}-\x{1183B}\x{1193B}-\x{1193C}\x{1193E}"
    r"\x{11943}-\x{11946}\x{119D4}-\x{119D7}\x{119DA}-\x{119DB}\x{119E0}"
    r"\x{119E2}\x{11A01}-\x{11A0A}\x{11A33}-\x{11A38}\x{11A3B}-\x{11A47}"
    r"\x{11A51}-\x{11A56}\x{11A59}-\x{11A5B}\x{11A8A}-\x{11A96}"
    r"\x{11A98}-\x{11A9C}\x{11A9E}-\x{11AA2}\x{11B00}-\x{11B09}"
    r"\x{11C30}-\x{11C36}\x{11C38}-\x{11C3D}\x{11C3F}\x{11C41}-\x{11C45}"
    r"\x{11C70}-\x{11C71}\x{11C92}-\x{11CA7}\x{11CAA}-\x{11CB0}"
    r"\x{11CB2}-\x{11CB3}\x{11CB5}-\x{11CB6}\x{11D31}-\x{11D36}\x{11D3A}"
    r"\x{11D3C}-\x{11D3D}\x{11D3F}-\x{11D45}\x{11D47}\x{11D90}-\x{11D91}"
    r"\x{11D95}\x{11D97}\x{11EF3}-\x{11EF4}\x{11EF7}-\x{11EF8}"
    r"\x{11F00}-\x{11F01}\x{11F36}-\x{11F3A}\x{11F40}\x{11F42}-\x{11F4F}"
    r"\x{11FFF}\x{12FF1}-\x{12FF2}\x{13430}-\x{13440}\x{13447}-\x{13455}"
    r"\x{16E97}-\x{16E9A}\x{16F4F}\x{16FE2}\x{16FE4}\x{1CF00}-\x{1CF2D}"
    r"\x{1CF30}-\x{1CF46}\x{1E000}-\x{1E006}\x{1E008}-\x{1E018}"
    r"\x{1E01B}-\x{1E021}\x{1E023}-\x{1E024}\x{1E026}-\x{1E02A}\x{1E08F}"
    r"\x{1E130}-\x{1E136}\x{1E2AE}\x{1E2EC}-\x{1E2EF}\x{1E4EC}-\x{1E4EF}"
    r"\x{1E944}-\x{1E94A}\x{1E95E}-\x{1E95F}"
    r"]"
)
# Punctuation to the original, a symbol or combining mark to RE2: becomes a
# word of its own, U+FFFF, which is [UNK] like the original's lone character.
_OLD_UNICODE_PUNCTUATION = r"[\x{166D}\x{111C9}]"
# The original's "Chinese character" ranges, including its 0x2B920 lower bound.
_CJK = (
    r"([\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{20000}-\x{2A6DF}"
    r"\x{2A700}-\x{2B73F}\x{2B740}-\x{2B81F}\x{2B920}-\x{2CEAF}"
    r"\x{F900}-\x{FAFF}\x{2F800}-\x{2FA1F}])"
)
_PUNCTUATION = r"[!-/:-@\[-`{-~\p{P}]"


def normalize(texts: tf.Tensor) -> tf.Tensor:
    """Applies BERT-uncased text normalization (steps 2-5 of the module doc).

    Args:
        texts: string tensor of any shape, valid UTF-8 without NUL bytes.

    Returns:
        The normalized strings, same shape.
    """
    texts = tf.strings.regex_replace(texts, _WHITESPACE, " ")
    texts = tf.strings.regex_replace(texts, _OLD_UNICODE_LETTERS, "\uffff")
    texts = tf.strings.regex_replace(texts, _OLD_UNICODE_PUNCTUATION, " \uffff ")
    texts = tf.strings.regex_replace(texts, _DELETED, "")
    texts = tf.strings.regex_replace(texts, _CJK, r" \1 ")
    texts = tf_text.normalize_utf8(texts, "NFD")
    texts = tf.strings.regex_replace(texts, r"\p{Mn}", "")
    # ICU lowercasing turns a word-final capital sigma into 'ς'; the original
    # lowercases each character on its own.
    texts = tf.strings.regex_replace(texts, "Σ", "σ")
    return tf.strings.lower(texts, encoding="utf-8")


class BertTokenizerTF(tf.Module):
    """BERT-uncased WordPiece tokenizer built from TensorFlow ops only.

    Attributes:
        vocab_file: the vocabulary (one token a line) as a SavedModel asset.
        max_length: the most tokens per text, "[CLS]" and "[SEP]" included.
    """

    def __init__(self, vocab_file: str, max_length: int = 256, name: str | None = None):
        """Builds the tokenizer.

        Args:
            vocab_file: path of a BERT `vocab.txt`; line number = token id.
            max_length: truncate to this many tokens, special tokens included.
            name: module name.
        """
        super().__init__(name=name)
        self.vocab_file = tf.saved_model.Asset(vocab_file)
        self.max_length = max_length
        # A StaticHashTable (not a StaticVocabularyTable): WordPiece detects
        # unknown pieces by the default value -1.
        self._vocab = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                self.vocab_file,
                key_dtype=tf.string,
                key_index=tf.lookup.TextFileIndex.WHOLE_LINE,
                value_dtype=tf.int64,
                value_index=tf.lookup.TextFileIndex.LINE_NUMBER,
            ),
            default_value=-1,
        )
        # Words over MAX_CHARS_PER_WORD characters become "[UNK]" before
        # WordPiece, so its byte limit only has to admit 4-byte characters.
        self._wordpiece = tf_text.WordpieceTokenizer(
            self._vocab,
            suffix_indicator="##",
            max_bytes_per_word=4 * MAX_CHARS_PER_WORD,
            token_out_type=tf.int64,
            unknown_token="[UNK]",
        )

    def token_id(self, token: str) -> tf.Tensor:
        """Returns the int32 id of `token` (-1 if it is not in the vocabulary)."""
        return tf.cast(self._vocab.lookup(tf.constant(token)), tf.int32)

    def words(self, texts: tf.Tensor) -> tf.RaggedTensor:
        """Splits texts into normalized words, special tokens kept verbatim.

        Args:
            texts: string tensor of shape [N].

        Returns:
            String RaggedTensor [N, (words)].
        """
        # tf_text.regex_split stops at a NUL byte; U+0001 is deleted like NUL.
        texts = tf.strings.regex_replace(texts, r"\x00", "\x01")
        pieces = tf_text.regex_split(texts, _SPECIAL, _SPECIAL)
        flat = pieces.flat_values
        is_special = tf.strings.regex_full_match(flat, _SPECIAL)
        plain = normalize(tf.where(is_special, "", flat))
        words = tf_text.regex_split(plain, _WHITESPACE + "|" + _PUNCTUATION, _PUNCTUATION)
        specials = tf.RaggedTensor.from_row_lengths(tf.boolean_mask(flat, is_special), tf.cast(is_special, tf.int64))
        # Each piece is either plain text or one special token, never both.
        words = tf.concat([words, specials], axis=1)
        words = pieces.with_flat_values(words).merge_dims(1, 2)
        too_long = tf.strings.length(words.flat_values, unit="UTF8_CHAR") > MAX_CHARS_PER_WORD
        return words.with_flat_values(tf.where(too_long, "[UNK]", words.flat_values))

    def tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
        """Tokenizes texts into "[CLS] pieces... [SEP]" ids, truncated.

        Args:
            texts: string tensor of shape [N].

        Returns:
            int32 RaggedTensor [N, (tokens)], each row at most `max_length` long.
        """
        texts = tf.convert_to_tensor(texts, tf.string)
        pieces = self._wordpiece.tokenize(self.words(texts)).merge_dims(1, 2)
        pieces = tf.cast(pieces[:, : self.max_length - 2], tf.int32)
        ends = tf.ones([pieces.nrows(), 1], tf.int32)
        return tf.concat(
            [
                tf.RaggedTensor.from_tensor(ends * self.token_id("[CLS]")),
                pieces,
                tf.RaggedTensor.from_tensor(ends * self.token_id("[SEP]")),
            ],
            axis=1,
        )
